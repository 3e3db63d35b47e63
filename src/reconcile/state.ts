/**
 * What reconciliation keeps in Redis between runs, beside the queue (`<prefix>:<queue>:reconcile:…`):
 *
 * - `fp:<account>:<collection>`: a hash, object id → the fingerprint found at its last scan (rescan strategy). It
 *   holds every object a rescan has read (some 100 bytes each); it has no expiry.
 * - `scans`: a hash, `<account>:<collection>` → the time (ms) the last complete rescan of that type started. Absent:
 *   the type was never scanned, and its first scan records fingerprints without queueing (unless a backfill).
 *
 * - `cursor`: the periodic reconcile's cursor, the end (ms) of the last successful window. A run reads from
 *   `cursor - RECONCILE_OVERLAP_SECONDS`; only a successful run moves it, so a run killed mid-way is covered again.
 * - `runs`: a hash, `last` and `lastSuccess` → the periodic run's summary as JSON (`LastRun`), and `enabledAt`: when a
 *   worker first scheduled the periodic reconcile (what "has not succeeded for 3 intervals" counts from before the
 *   first success).
 *
 * Fingerprints are written after the change they reveal was queued: a run interrupted in between finds the change
 * again, and the queue's deduplication folds the second job.
 */
import type { RedisClient } from '../queue/connection.ts';

/** What `stats` shows of a periodic run. */
export interface LastRun {
  /** When it ended (ISO 8601). */
  at: string;
  outcome: 'success' | 'failure';
  /** The window read (ISO 8601). */
  since: string;
  until: string;
  durationSeconds: number;
  scanned: number;
  changes: number;
  queued: number;
  /** The failure, on one line. */
  error?: string;
}

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

  /** The periodic reconcile's cursor (ms), or null before its first run. */
  async cursor(): Promise<number | null> {
    const value = await this.client.get(`${this.base}:cursor`);
    return value === null ? null : Number(value);
  }

  /** Sets the cursor unless one exists; returns the cursor in force. */
  async initCursor(at: number): Promise<number> {
    await this.client.set(`${this.base}:cursor`, String(Math.floor(at)), 'NX');
    return (await this.cursor()) ?? at;
  }

  async setCursor(at: number): Promise<void> {
    await this.client.set(`${this.base}:cursor`, String(Math.floor(at)));
  }

  async recordRun(run: LastRun): Promise<void> {
    const json = JSON.stringify(run);
    await this.client.hset(
      `${this.base}:runs`,
      run.outcome === 'success' ? { last: json, lastSuccess: json } : { last: json },
    );
  }

  /** Records when the periodic reconcile was turned on, unless known. */
  async markEnabled(at: number): Promise<void> {
    await this.client.hsetnx(`${this.base}:runs`, 'enabledAt', String(Math.floor(at)));
  }

  async runs(): Promise<{ last: LastRun | null; lastSuccess: LastRun | null; enabledAt: number | null }> {
    const [last, lastSuccess, enabledAt] = await this.client.hmget(
      `${this.base}:runs`,
      'last',
      'lastSuccess',
      'enabledAt',
    );
    const parse = (v: string | null) => (v === null ? null : (JSON.parse(v) as LastRun));
    return {
      last: parse(last ?? null),
      lastSuccess: parse(lastSuccess ?? null),
      enabledAt: enabledAt ? Number(enabledAt) : null,
    };
  }
}
