/**
 * When a webhook delivery of each record was last received: what reconciliation (src/reconcile/) checks so that it
 * does not queue a change a webhook already brought. Written by the worker's delivery stage for every job made from a
 * webhook (whatever `RECORD_ORDER`), and by reconciliation for the changes it queued (their change time), so that a
 * second run over the same window finds them seen.
 *
 * One string per record, `<prefix>:<queue>:seen:<record>` (the record as `recordKeyOf` names it): the time in ms. A
 * write keeps the later of the stored time and its own. Each key expires `SEEN_TTL_MS` after its last write: beyond
 * that, a reconcile window is longer than any this service keeps track of, and a change is queued again (handlers
 * run at least once anyway).
 */
import type { RedisClient } from './connection.ts';

/** 31 days: a month of look-back, the longest reconcile window the docs advise. */
export const SEEN_TTL_MS = 31 * 24 * 3600 * 1000;

const MARK = `
local at = redis.call('GET', KEYS[1])
if at and tonumber(at) >= tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`;

type WithMark = RedisClient & { sellsySeenMark(key: string, at: number, ttlMs: number): Promise<number> };

export class RecordSeen {
  private readonly client: WithMark;

  constructor(
    client: RedisClient,
    private readonly keyPrefix: string,
    private readonly ttlMs = SEEN_TTL_MS,
  ) {
    if (!('sellsySeenMark' in client)) client.defineCommand('sellsySeenMark', { numberOfKeys: 1, lua: MARK });
    this.client = client as WithMark;
  }

  /** For the queue `queueName` under `prefix`. */
  static of(client: RedisClient, prefix: string, queueName: string): RecordSeen {
    return new RecordSeen(client, `${prefix}:${queueName}:seen`);
  }

  /** Records that the record was seen at `atMs` (kept only if later than what is stored). */
  async mark(record: string, atMs: number): Promise<void> {
    await this.client.sellsySeenMark(`${this.keyPrefix}:${record}`, Math.floor(atMs), this.ttlMs);
  }

  /** `mark` for each `[record, atMs]`, in one round trip (the keys share the queue's hash tag: one slot on a Cluster). */
  async markAll(entries: readonly (readonly [string, number])[]): Promise<void> {
    if (entries.length === 0) return;
    const pipeline = this.client.pipeline() as unknown as {
      sellsySeenMark(key: string, at: number, ttlMs: number): unknown;
      exec(): Promise<[Error | null, unknown][] | null>;
    };
    for (const [record, atMs] of entries)
      pipeline.sellsySeenMark(`${this.keyPrefix}:${record}`, Math.floor(atMs), this.ttlMs);
    const failed = (await pipeline.exec())?.find(([err]) => err !== null);
    if (failed?.[0]) throw failed[0];
  }

  /** When each record was last seen, in ms, or null. */
  async get(records: readonly string[]): Promise<(number | null)[]> {
    if (records.length === 0) return [];
    // One MGET: the keys share the queue's prefix, which on a Cluster is a hash tag (`{bull}`), so one slot.
    const values = await this.client.mget(...records.map((r) => `${this.keyPrefix}:${r}`));
    return values.map((v) => (v === null ? null : Number(v)));
  }
}
