/**
 * Which destinations already took a delivery, and which were handed a retry job of their own, so that no run of the
 * fan-out sends twice to a destination.
 *
 * One Redis hash per delivery, `<prefix>:<queue>:destinations:<deliveryId>`: field = destination name, value `sent`,
 * `retrying` (a failure: the destination has its own job, `<deliveryId>-to-<name>`) or `refused: <reason>` (a 4xx/3xx
 * answer: its own job fails at once with the reason, without a request, and turns the entry to `retrying`, so that a
 * replay of that dead letter asks again). Written only when some destination did not take the event at once (one
 * HSET + EXPIRE), read by each fan-out with several destinations configured, removed when every destination took it
 * at once: the common case costs one read.
 *
 * Why not the job's own data (`job.updateData`): the data is the stable queue contract and holds the raw body (up
 * to BODY_LIMIT_BYTES), rewritten whole on each update; a record-stage job runs on another job's delivery; and
 * `replay` resets a dead letter's attempts but keeps this hash, so a replayed dead letter sends only to the
 * destinations that had not taken it. Keyed by delivery id, as `webhook-id` is.
 *
 * A worker killed between a destination's 2xx and the end of the attempt writes nothing: the job runs again and that
 * destination gets the delivery a second time, with the same `webhook-id` (its idempotency key).
 */
import type { RedisClient } from './connection.ts';

export type LedgerEntry = 'sent' | 'retrying' | `refused: ${string}`;

export interface DestinationLedger {
  read(deliveryId: string): Promise<Map<string, LedgerEntry>>;
  /** Adds entries (none: only renews the expiry). */
  record(deliveryId: string, entries: ReadonlyMap<string, LedgerEntry>): Promise<void>;
  forget(deliveryId: string): Promise<void>;
}

function ledgerKey(base: string, deliveryId: string): string {
  return `${base}:destinations:${deliveryId}`;
}

/**
 * What each delivery's entry says about one destination (null: none), in one round trip: `replay --destination` asks
 * it for a page of dead letters at once. One pipeline of HGETs; on a Cluster the keys share the slot of the hash tag
 * that QUEUE_PREFIX or QUEUE_NAME must hold there.
 */
export async function entriesFor(
  redis: RedisClient,
  /** `<prefix>:<queue>` */
  base: string,
  deliveryIds: readonly string[],
  destination: string,
): Promise<(LedgerEntry | null)[]> {
  if (deliveryIds.length === 0) return [];
  const pipeline = redis.pipeline();
  for (const id of deliveryIds) pipeline.hget(ledgerKey(base, id), destination);
  const results = (await pipeline.exec()) ?? [];
  return deliveryIds.map((_, i) => {
    const [err, value] = results[i] ?? [new Error('no answer'), null];
    if (err) throw err;
    return (value as LedgerEntry | null) ?? null;
  });
}

export class RedisDestinationLedger implements DestinationLedger {
  constructor(
    private readonly redis: RedisClient,
    /** `<prefix>:<queue>` */
    private readonly base: string,
    /** Outlives the job's retries and its time as a dead letter (JOB_KEEP_FAILED_SECONDS), renewed at each write. */
    private readonly ttlSeconds: number,
  ) {}

  private key(deliveryId: string): string {
    return ledgerKey(this.base, deliveryId);
  }

  async read(deliveryId: string): Promise<Map<string, LedgerEntry>> {
    const hash = await this.redis.hgetall(this.key(deliveryId));
    return new Map(Object.entries(hash) as [string, LedgerEntry][]);
  }

  async record(deliveryId: string, entries: ReadonlyMap<string, LedgerEntry>): Promise<void> {
    const key = this.key(deliveryId);
    const multi = this.redis.multi();
    if (entries.size > 0) multi.hset(key, Object.fromEntries(entries));
    multi.expire(key, this.ttlSeconds);
    const results = await multi.exec();
    const failed = results?.find(([err]) => err !== null)?.[0];
    if (failed) throw failed;
  }

  async forget(deliveryId: string): Promise<void> {
    await this.redis.del(this.key(deliveryId));
  }
}
