/**
 * The latest delivery of each record, for the record stage (`RECORD_ORDER=latest`). Written by the worker's delivery
 * stage and, for a delivery the ingest queue folded as a duplicate, by the listener (src/queue/records.ts).
 *
 * BullMQ's deduplication keeps one record job waiting and drops later adds for the same record while it waits; the
 * dropped delivery may be newer (an `updated` followed by a `deleted`). So the delivery stage also offers every
 * delivery here, and the record stage runs on whatever is latest when it starts, not on the delivery that happened
 * to create its job.
 *
 * One Redis hash per record, `<prefix>:<queue>-records:latest:<record>`: `at` (receivedAt, ms), `name`, `data` (the
 * job data, JSON), `done` (the delivery id the handlers last completed). A delivery replaces the stored one unless
 * that one was received later. The hash expires after `ttlMs` without offers.
 * Written by hand: BullMQ keeps a record's latest data only while its job is active (`keepLastIfActive`).
 */

import type { WebhookJobData } from '../queue/contract.ts';
import type { RedisClient } from './connection.ts';

// ARGV[5] = '1': only if the record is tracked already (its hash exists), else -1.
const OFFER = `
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local at = redis.call('HGET', KEYS[1], 'at')
if at and tonumber(at) > tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 0
end
redis.call('HSET', KEYS[1], 'at', ARGV[1], 'name', ARGV[2], 'data', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1`;

export interface Latest {
  name: string;
  data: WebhookJobData;
  /** The handlers already completed this delivery: nothing newer arrived since. */
  done: boolean;
}

type WithOffer = RedisClient & {
  sellsyLatestOffer(
    key: string,
    at: number,
    name: string,
    data: string,
    ttlMs: number,
    trackedOnly: '0' | '1',
  ): Promise<number>;
};

/**
 * How long a record's hash lives without offers: at least a day, as long as a dead letter is kept (a replay runs on
 * it), and as long as the deduplication window (a delivery folded within it must still find its record tracked).
 */
export function latestTtlMs(config: { jobs: { keepFailedSeconds: number }; dedupWindowSeconds: number }): number {
  return Math.max(config.jobs.keepFailedSeconds, config.dedupWindowSeconds, 24 * 3600) * 1000;
}

/** What `offer` did: `stored`, `older` (a later-received delivery is kept), `untracked` (`trackedOnly`, no hash). */
export type OfferOutcome = 'stored' | 'older' | 'untracked';
const OUTCOMES: Record<number, OfferOutcome> = { 1: 'stored', 0: 'older', [-1]: 'untracked' };

export class LatestDeliveries {
  private readonly client: WithOffer;

  constructor(
    client: RedisClient,
    private readonly keyPrefix: string,
    private readonly ttlMs: number,
  ) {
    if (!('sellsyLatestOffer' in client)) client.defineCommand('sellsyLatestOffer', { numberOfKeys: 1, lua: OFFER });
    this.client = client as WithOffer;
  }

  private key(record: string): string {
    return `${this.keyPrefix}:latest:${record}`;
  }

  /**
   * Keeps `data` as the record's latest delivery unless a later-received one is stored. With `trackedOnly`, only
   * for a record that has a hash already: one the delivery stage of a `RECORD_ORDER=latest` worker offered before.
   */
  async offer(
    record: string,
    name: string,
    data: WebhookJobData,
    { trackedOnly = false }: { trackedOnly?: boolean } = {},
  ): Promise<OfferOutcome> {
    const at = Date.parse(data.receivedAt);
    const reply = await this.client.sellsyLatestOffer(
      this.key(record),
      Number.isNaN(at) ? 0 : at,
      name,
      JSON.stringify(data),
      this.ttlMs,
      trackedOnly ? '1' : '0',
    );
    return OUTCOMES[reply] ?? 'stored';
  }

  /** The record's latest delivery, or null when none is stored (expired). */
  async get(record: string): Promise<Latest | null> {
    const [name, data, done] = await this.client.hmget(this.key(record), 'name', 'data', 'done');
    if (!name || !data) return null;
    const parsed = JSON.parse(data) as WebhookJobData;
    return { name, data: parsed, done: done === parsed.deliveryId };
  }

  /** Records that the handlers completed this delivery. */
  async markDone(record: string, deliveryId: string): Promise<void> {
    await this.client.hset(this.key(record), 'done', deliveryId);
  }
}
