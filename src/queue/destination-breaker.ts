/**
 * A circuit breaker per destination, shared by every worker process through Redis: after `breaker_failures`
 * consecutive failed requests to a destination (counted across all workers), the destination is open and no request
 * is sent to it, except one probe every `breaker_probe_seconds` (one across all workers); a probe, or any request,
 * that succeeds closes it.
 *
 * One hash per destination, `<prefix>:<queue>:breaker:<name>` (the queue's prefix: on a Cluster its hash tag keeps the
 * key in the queue's slot): `failures` (consecutive), `open` (`1` when open), `probeAt` (ms: when the next probe may
 * go). No hash: closed and healthy. The destinations of one job are read with one script call (`beforeAll`: every key
 * shares the queue's hash tag, so one script may touch them all on a Cluster); a success writes only when the hash
 * exists (after a failure), so healthy destinations cost one read per job.
 *
 * Failures counted: what retrying could fix (5xx, 408, 429, timeouts, network errors). A refusal (4xx) is an answer
 * from a working destination: it neither counts nor resets. Times are the workers' clocks (ms since the epoch).
 */
import type { RedisClient } from './connection.ts';

/** `closed` with `dirty` when failures are counted (a success must reset them); `open` with the wait to the probe. */
export type BreakerDecision =
  | { state: 'closed'; dirty: boolean }
  | { state: 'probe' }
  | { state: 'open'; probeInMs: number; failures: number };

export interface DestinationBreaker {
  /** The decision for each destination, in order, from one script call. */
  beforeAll(targets: readonly { name: string; probeMs: number }[]): Promise<BreakerDecision[]>;
  /** True when this success closed an open breaker. */
  success(name: string): Promise<boolean>;
  /** True when the breaker is open after this failure. */
  failure(name: string, threshold: number, probeMs: number): Promise<boolean>;
  /** Every destination's state, for `stats` and the dashboard. */
  states(names: readonly string[]): Promise<Map<string, BreakerState>>;
}

/** Open or not, the consecutive failures, and while open when the next probe may go (ms since the epoch). */
export interface BreakerState {
  open: boolean;
  failures: number;
  probeAt: number | null;
}

// KEYS the hashes; ARGV now, then each key's probeMs. Returns three numbers per key: {0|1 closed clean|dirty, 0, 0},
// {2, 0, 0} probe, {3, ms to probe, failures}.
const BEFORE_ALL = `
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local h = redis.call('HMGET', key, 'open', 'probeAt', 'failures')
  local code, wait, failures = 0, 0, 0
  if h[1] ~= '1' then
    if h[3] then code = 1 end
  else
    local at = tonumber(h[2] or '0')
    if now >= at then
      redis.call('HSET', key, 'probeAt', now + tonumber(ARGV[i + 1]))
      code = 2
    else
      code, wait, failures = 3, at - now, tonumber(h[3] or '0')
    end
  end
  out[#out + 1] = code
  out[#out + 1] = wait
  out[#out + 1] = failures
end
return out
`;

// KEYS[1]; ARGV threshold, now, probeMs. Returns 1 when open after this failure.
const FAILURE = `
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if redis.call('HGET', KEYS[1], 'open') == '1' then return 1 end
if n >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'open', '1', 'probeAt', tonumber(ARGV[2]) + tonumber(ARGV[3]))
  return 1
end
return 0
`;

// KEYS[1]. Returns 1 when it was open.
const SUCCESS = `
local open = redis.call('HGET', KEYS[1], 'open')
redis.call('DEL', KEYS[1])
if open == '1' then return 1 end
return 0
`;

type WithBreaker = RedisClient & {
  breakerBeforeAll(...keysThenArgs: (string | number)[]): Promise<number[]>;
  breakerFailure(key: string, threshold: number, now: number, probeMs: number): Promise<number>;
  breakerSuccess(key: string): Promise<number>;
};

export class RedisDestinationBreaker implements DestinationBreaker {
  private readonly client: WithBreaker;

  constructor(
    client: RedisClient,
    /** `<prefix>:<queue>` */
    private readonly base: string,
  ) {
    if (!('breakerBeforeAll' in client)) {
      // The number of keys varies by job: given first in each call.
      client.defineCommand('breakerBeforeAll', { lua: BEFORE_ALL });
      client.defineCommand('breakerFailure', { numberOfKeys: 1, lua: FAILURE });
      client.defineCommand('breakerSuccess', { numberOfKeys: 1, lua: SUCCESS });
    }
    this.client = client as WithBreaker;
  }

  static keyOf(base: string, name: string): string {
    return `${base}:breaker:${name}`;
  }

  async beforeAll(targets: readonly { name: string; probeMs: number }[]): Promise<BreakerDecision[]> {
    if (targets.length === 0) return [];
    const keys = targets.map((t) => RedisDestinationBreaker.keyOf(this.base, t.name));
    const reply = await this.client.breakerBeforeAll(
      keys.length,
      ...keys,
      Date.now(),
      ...targets.map((t) => t.probeMs),
    );
    return targets.map((_, i) => {
      const [code, ms, failures] = reply.slice(i * 3, i * 3 + 3);
      if (code === 2) return { state: 'probe' };
      if (code === 3) return { state: 'open', probeInMs: ms ?? 0, failures: failures ?? 0 };
      return { state: 'closed', dirty: code === 1 };
    });
  }

  async success(name: string): Promise<boolean> {
    return (await this.client.breakerSuccess(RedisDestinationBreaker.keyOf(this.base, name))) === 1;
  }

  async failure(name: string, threshold: number, probeMs: number): Promise<boolean> {
    const key = RedisDestinationBreaker.keyOf(this.base, name);
    return (await this.client.breakerFailure(key, threshold, Date.now(), probeMs)) === 1;
  }

  async states(names: readonly string[]): Promise<Map<string, BreakerState>> {
    const out = new Map<string, BreakerState>();
    for (const name of names) {
      const [open, failures, probeAt] = await this.client.hmget(
        RedisDestinationBreaker.keyOf(this.base, name),
        'open',
        'failures',
        'probeAt',
      );
      out.set(name, {
        open: open === '1',
        failures: Number(failures ?? 0),
        probeAt: open === '1' && probeAt !== null ? Number(probeAt) : null,
      });
    }
    return out;
  }
}
