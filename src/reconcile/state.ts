/**
 * What reconciliation keeps in Redis between runs, beside the queue (`<prefix>:<queue>:reconcile:…`):
 *
 * - `fp:<account>:<collection>`: a hash, object id → the fingerprint found at its last scan (rescan strategy). It
 *   holds every object a rescan has read (some 100 bytes each); it has no expiry.
 * - `scans`: a hash, `<account>:<collection>` → the time (ms) the last complete rescan of that type started. Absent:
 *   the type was never scanned, and its first scan records fingerprints without queueing (unless a backfill).
 *
 * Fingerprints are written after the change they reveal was queued: a run interrupted in between finds the change
 * again, and the queue's deduplication folds the second job.
 */
import type { RedisClient } from '../queue/connection.ts';

export class ReconcileState {
  private readonly base: string;

  constructor(
    private readonly client: RedisClient,
    prefix: string,
    queueName: string,
  ) {
    this.base = `${prefix}:${queueName}:reconcile`;
  }

  private fpKey(account: string, collection: string): string {
    return `${this.base}:fp:${account}:${collection}`;
  }

  async fingerprints(account: string, collection: string, ids: readonly string[]): Promise<(string | null)[]> {
    if (ids.length === 0) return [];
    return this.client.hmget(this.fpKey(account, collection), ...ids);
  }

  async setFingerprints(account: string, collection: string, entries: ReadonlyMap<string, string>): Promise<void> {
    if (entries.size === 0) return;
    await this.client.hset(this.fpKey(account, collection), Object.fromEntries(entries));
  }

  /** When the last complete rescan of this type started, or null. */
  async lastScan(account: string, collection: string): Promise<number | null> {
    const value = await this.client.hget(`${this.base}:scans`, `${account}:${collection}`);
    return value === null ? null : Number(value);
  }

  async setLastScan(account: string, collection: string, startedAt: number): Promise<void> {
    await this.client.hset(`${this.base}:scans`, `${account}:${collection}`, String(startedAt));
  }
}
