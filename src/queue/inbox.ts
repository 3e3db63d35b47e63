/**
 * The inbox: where the listener acknowledges a delivery (`ACK_WRITE=inbox`, the default). One `RPUSH` of the job's
 * JSON to a Redis list is far cheaper than BullMQ's `add` (a Lua script that writes a hash, a list, an event stream
 * and a deduplication key); the mover (src/queue/mover.ts, in a thread of the listener process) turns the entries
 * into BullMQ jobs right after.
 *
 * Keys, all in the queue's hash slot (its prefix and name): `<prefix>:<queue>:inbox` (the entries, oldest first),
 * `<prefix>:<queue>:inbox:moving` (the entries a mover took and has not finished), `<prefix>:<queue>:inbox:mover` (the
 * mover lease: a token with an expiry).
 *
 * The move is crash-safe and idempotent. A mover that holds the lease takes entries from the inbox to `moving` in one
 * script (`claim`), writes them as jobs (job id = delivery id, deduplication id = dedup key: writing one twice makes
 * no second job), and only then removes them from `moving` (`finish`). A mover killed in between leaves them in
 * `moving`; the next holder of the lease writes them again, and BullMQ returns the jobs already made. Both scripts check
 * the lease token first, so a mover that lost its lease (paused past the expiry) cannot remove what the new holder
 * has not written. On a replicated Redis the removal is replicated after the job writes it follows (one master, one
 * ordered stream): a replica that has the removal has the jobs.
 */
import type { Cluster, Redis } from 'ioredis';
import type { RedisClient } from './connection.ts';
import type { WebhookJob } from './contract.ts';

export interface InboxKeys {
  inbox: string;
  moving: string;
  lease: string;
}

export function inboxKeys(prefix: string, queueName: string): InboxKeys {
  const inbox = `${prefix}:${queueName}:inbox`;
  return { inbox, moving: `${inbox}:moving`, lease: `${inbox}:mover` };
}

/** An inbox entry: the job as JSON, its name and data (the queue contract's) and nothing else. */
export function encodeEntry(job: WebhookJob): string {
  return JSON.stringify({ name: job.name, data: job.data });
}

export function decodeEntry(entry: string): WebhookJob {
  const parsed = JSON.parse(entry) as Partial<WebhookJob>;
  if (typeof parsed?.name !== 'string' || typeof parsed.data?.deliveryId !== 'string') {
    throw new Error('not an inbox entry (no job name or delivery id)');
  }
  return parsed as WebhookJob;
}

/** The mover lost its lease (another took it, or it expired): it must stop moving. */
export const LEASE_LOST = 'INBOX_LEASE_LOST';

/** Lua: tops `moving` (KEYS[2]) up to ARGV[2] entries from the head of the inbox (KEYS[1]) and returns its first ones. */
const TOP_UP = `
local max = tonumber(ARGV[2])
local want = max - redis.call('LLEN', KEYS[2])
if want > 0 then
  local items = redis.call('LRANGE', KEYS[1], 0, want - 1)
  if #items > 0 then
    redis.call('LTRIM', KEYS[1], #items, -1)
    redis.call('RPUSH', KEYS[2], unpack(items))
  end
end
return redis.call('LRANGE', KEYS[2], 0, max - 1)`;

/**
 * KEYS inbox, moving, lease; ARGV token, max. Tops `moving` up to `max` entries from the head of the inbox and returns
 * the first `max` of `moving`: the entries a killed mover left there come first.
 */
const CLAIM = `
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return redis.error_reply('${LEASE_LOST}') end
${TOP_UP}`;

/**
 * KEYS inbox, moving, lease; ARGV token, max, count. Removes the first `count` entries of `moving` (written as jobs),
 * then claims the next ones as CLAIM does: one round trip per batch instead of two.
 */
const FINISH = `
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return redis.error_reply('${LEASE_LOST}') end
redis.call('LTRIM', KEYS[2], tonumber(ARGV[3]), -1)
${TOP_UP}`;

/** KEYS lease; ARGV token, ms. Takes the lease if free, or extends it if held with this token. 1 when held. */
const HOLD = `
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0`;

/** KEYS lease; ARGV token. Gives the lease up if held with this token. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

interface InboxCommands {
  inboxClaim(inbox: string, moving: string, lease: string, token: string, max: number): Promise<string[]>;
  /** Removes the first `count` entries of `moving` and claims the next `max`. */
  inboxFinish(
    inbox: string,
    moving: string,
    lease: string,
    token: string,
    max: number,
    count: number,
  ): Promise<string[]>;
  inboxHold(lease: string, token: string, ms: number): Promise<number>;
  inboxRelease(lease: string, token: string): Promise<number>;
}

/** The inbox's scripts on `client` (EVALSHA, loaded again by ioredis after a restart or failover). */
export function inboxCommands(client: RedisClient): InboxCommands {
  const target = client as (Redis | Cluster) & Partial<InboxCommands>;
  if (target.inboxClaim === undefined) {
    target.defineCommand('inboxClaim', { numberOfKeys: 3, lua: CLAIM });
    target.defineCommand('inboxFinish', { numberOfKeys: 3, lua: FINISH });
    target.defineCommand('inboxHold', { numberOfKeys: 1, lua: HOLD });
    target.defineCommand('inboxRelease', { numberOfKeys: 1, lua: RELEASE });
  }
  return target as unknown as InboxCommands;
}

/** Entries waiting in the inbox or being moved, and the age of the oldest (0 when none). */
export async function inboxStatus(
  client: RedisClient,
  keys: InboxKeys,
  now = Date.now(),
): Promise<{ depth: number; oldestAgeSeconds: number }> {
  const [waiting, moving, head] = await Promise.all([
    client.llen(keys.inbox),
    client.llen(keys.moving),
    client.lindex(keys.moving, 0).then((entry) => entry ?? client.lindex(keys.inbox, 0)),
  ]);
  let oldestAgeSeconds = 0;
  if (head !== null) {
    // The receipt time is near the start of the entry: no need to parse a large body.
    const match = /"receivedAt":"([^"]+)"/.exec(head.slice(0, 512));
    const receivedMs = match ? Date.parse(match[1] as string) : Number.NaN;
    if (Number.isFinite(receivedMs)) oldestAgeSeconds = Math.max(0, (now - receivedMs) / 1000);
  }
  return { depth: waiting + moving, oldestAgeSeconds };
}

/** `inboxStatus`, and whether a mover holds the lease (a listener is moving the entries, or waiting for them). */
export async function inboxState(
  client: RedisClient,
  keys: InboxKeys,
  now = Date.now(),
): Promise<{ depth: number; oldestAgeSeconds: number; moverRunning: boolean }> {
  const [status, holders] = await Promise.all([inboxStatus(client, keys, now), client.exists(keys.lease)]);
  return { ...status, moverRunning: holders === 1 };
}
