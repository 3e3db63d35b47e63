/**
 * One reconcile run: for each account and each chosen collection, reads the Sellsy API for objects changed in a window
 * and queues one synthetic delivery (src/reconcile/synthetic.ts) per change no webhook brought.
 *
 * Per collection, its strategy (src/reconcile/collections.ts):
 * - incremental: objects whose change time (`updated_at`, `updated`) falls in `[since, until]`. A change is not queued
 *   when a webhook delivery of the record was received at or after its time (src/queue/seen.ts); once queued, the
 *   record counts as seen at that time, so the next run over the window finds nothing new.
 * - rescan: objects created in `[min(since, until - lookback), until]`; each one's fingerprint is compared with the
 *   one stored at the last scan. Changed: queued, unless a webhook of the record came since the last scan. Unknown (no
 *   fingerprint yet): queued when created since the last scan, or in a backfill when created since `since`; otherwise
 *   (the first scan of a type) only recorded.
 * With `dryRun`, nothing is queued nor recorded: the tallies say what a real run would do.
 *
 * Safe to interrupt: what a run records (seen times, fingerprints, the scan time) follows the writes of the jobs it
 * covers, so a rerun finds what was left; and a change queued twice is folded by the queue's deduplication.
 */
import type { WebhookJob } from '../queue/contract.ts';
import { recordKey } from '../queue/records.ts';
import type { RecordSeen } from '../queue/seen.ts';
import type { SellsyApi } from '../sellsy/api.ts';
import { type CollectionPlan, planOf } from './collections.ts';
import { fingerprintOf } from './fingerprint.ts';
import { QuotaShare } from './quota.ts';
import { type SellsyObject, searchPages } from './search.ts';
import type { ReconcileState } from './state.ts';
import { type Change, syntheticJob } from './synthetic.ts';

/** Where synthetic deliveries go: the queue producer (`duplicate`: folded into an earlier job of the same change). */
export interface ReconcileWriter {
  enqueue(job: WebhookJob): Promise<{ duplicate: boolean }>;
}

export interface ReconcileDeps {
  /** Each account to read, with its API client. */
  accounts: readonly { account: string; api: SellsyApi }[];
  writer: ReconcileWriter;
  state: ReconcileState;
  seen: RecordSeen;
  now?: () => number;
  /** `RECONCILE_QUOTA_SHARE`: the share of each minute's quota left that the run may spend per account; none: no cap. */
  quotaShare?: number;
  /** The length of a quota minute (tests shorten it). */
  minuteMs?: number;
}

export interface ReconcileRun {
  since: number;
  until: number;
  /** How far back a rescan reads (objects created since `until - lookbackMs`, at least since `since`). */
  lookbackMs: number;
  /** Sellsy collections (`companies`, `invoices`…). */
  types: readonly string[];
  dryRun: boolean;
  /** A backfill: a rescan also queues objects created in the window that it has no fingerprint of. */
  backfill: boolean;
  signal?: AbortSignal;
  /** After each page of each type: the running tally. */
  onProgress?: (tally: Tally) => void;
}

export interface Tally {
  account: string;
  collection: string;
  strategy: 'incremental' | 'rescan';
  /** Objects the search returned. */
  found: number;
  /** Changes to queue (in a dry run: that would be queued). */
  changes: number;
  /** New jobs written. */
  queued: number;
  /** Changes the queue folded into an earlier job of the same change. */
  duplicates: number;
  /** Changes a webhook (or an earlier run) already brought. */
  alreadySeen: number;
  /** Rescan: same fingerprint as at the last scan. */
  unchanged: number;
  /** Rescan: fingerprints recorded without queueing (first scan). */
  recorded: number;
  /** 429 answers waited out. */
  rateLimited: number;
  /** The API client's calls so far (all types of the account). */
  calls: number;
  /** Per-minute quota left, as Sellsy last sent it (null when never sent). */
  quotaByMinute: number | null;
  quotaByDay: number | null;
}

const iso = (ms: number) => new Date(ms).toISOString();

export async function reconcile(deps: ReconcileDeps, run: ReconcileRun): Promise<Tally[]> {
  const tallies: Tally[] = [];
  for (const { account, api } of deps.accounts) {
    // One per account: each account has its own quota.
    const quota = deps.quotaShare === undefined ? undefined : new QuotaShare(api, deps.quotaShare, deps.minuteMs);
    for (const collection of run.types) {
      const plan = planOf(collection);
      if (plan === null) throw new Error(`no reconcile strategy for Sellsy collection ${JSON.stringify(collection)}`);
      try {
        tallies.push(await reconcileType(deps, run, account, api, plan, quota));
      } catch (err) {
        throw Object.assign(err as Error, { collection });
      }
    }
  }
  return tallies;
}

/** What one object found by a search is, for its run. */
type Verdict =
  | { kind: 'change'; changedAt: number | null; fingerprint: string | null }
  | { kind: 'alreadySeen'; fingerprint: string | null }
  | { kind: 'unchanged' }
  | { kind: 'recorded'; fingerprint: string };

/** What a run knows of one object: the object, when a webhook of its record last came, its stored fingerprint. */
interface Found {
  object: SellsyObject;
  seenAt: number | null;
  stored: string | null;
}

/** A date-time field of an object as ms, or null. */
function timeOf(object: SellsyObject, field: string): number | null {
  const value = object[field];
  const time = typeof value === 'string' ? Date.parse(value) : Number.NaN;
  return Number.isNaN(time) ? null : time;
}

/** Incremental: a change at the object's change time, unless a webhook (or an earlier run) came at or after it. */
function judgeIncremental({ object, seenAt }: Found, changedAtField: string): Verdict {
  const changedAt = timeOf(object, changedAtField);
  if (changedAt !== null && seenAt !== null && seenAt >= changedAt) return { kind: 'alreadySeen', fingerprint: null };
  // Without a change time (never seen from Sellsy), the object's state stands for the change.
  return { kind: 'change', changedAt, fingerprint: changedAt === null ? fingerprintOf(object) : null };
}

/**
 * Rescan: the fingerprint against the stored one. `lastScan`: when the previous complete scan started (null: none).
 * `newSince`: an object without a fingerprint created since then is new (null: none is, the first scan).
 */
function judgeRescan(
  { object, seenAt, stored }: Found,
  createdField: string,
  lastScan: number | null,
  newSince: number | null,
): Verdict {
  const fingerprint = fingerprintOf(object);
  if (stored === fingerprint) return { kind: 'unchanged' };
  if (stored === null) {
    const created = timeOf(object, createdField);
    if (newSince === null || (created !== null && created < newSince)) return { kind: 'recorded', fingerprint };
  }
  if (lastScan !== null && seenAt !== null && seenAt > lastScan) return { kind: 'alreadySeen', fingerprint };
  return { kind: 'change', changedAt: null, fingerprint };
}

async function reconcileType(
  deps: ReconcileDeps,
  run: ReconcileRun,
  account: string,
  api: SellsyApi,
  plan: CollectionPlan,
  quota: QuotaShare | undefined,
): Promise<Tally> {
  const now = deps.now ?? Date.now;
  const { strategy, collection } = plan;
  const tally: Tally = {
    account,
    collection,
    strategy: strategy.kind,
    found: 0,
    changes: 0,
    queued: 0,
    duplicates: 0,
    alreadySeen: 0,
    unchanged: 0,
    recorded: 0,
    rateLimited: 0,
    calls: api.calls,
    quotaByMinute: api.quota.byMinute,
    quotaByDay: api.quota.byDay,
  };
  const startedAt = now();
  const lastScan = strategy.kind === 'rescan' ? await deps.state.lastScan(account, collection) : null;
  // Rescan: objects without a fingerprint are new when created since the last scan, or (a backfill) in the window.
  const newSince = run.backfill ? Math.min(run.since, lastScan ?? run.since) : lastScan;
  const judge = (found: Found): Verdict =>
    strategy.kind === 'incremental'
      ? judgeIncremental(found, strategy.changedAt)
      : judgeRescan(found, strategy.created, lastScan, newSince);
  const start = strategy.kind === 'rescan' ? Math.min(run.since, run.until - run.lookbackMs) : run.since;
  const pages = searchPages(api, collection, {
    filters: { [strategy.filter]: { start: iso(start), end: iso(run.until) } },
    ...(run.signal ? { signal: run.signal } : {}),
    ...(quota ? { quota } : {}),
    onRateLimited: () => {
      tally.rateLimited++;
    },
  });
  for await (const { objects } of pages) {
    tally.found += objects.length;
    const withIds = objects.filter((o) => typeof o.id === 'string' || typeof o.id === 'number');
    const ids = withIds.map((o) => String(o.id));
    const [seen, stored] = await Promise.all([
      deps.seen.get(ids.map((id) => recordKey(account, collection, id))),
      strategy.kind === 'rescan' ? deps.state.fingerprints(account, collection, ids) : [],
    ]);
    const changes: Change[] = [];
    const fingerprints = new Map<string, string>();
    withIds.forEach((object, i) => {
      const id = ids[i] as string;
      const verdict = judge({ object, seenAt: seen[i] ?? null, stored: stored[i] ?? null });
      if (verdict.kind === 'unchanged') tally.unchanged++;
      else if (verdict.kind === 'recorded') tally.recorded++;
      else if (verdict.kind === 'alreadySeen') tally.alreadySeen++;
      else {
        const { changedAt, fingerprint } = verdict;
        changes.push({ account, collection, relatedType: plan.relatedType, id, changedAt, fingerprint });
      }
      if (strategy.kind === 'rescan' && 'fingerprint' in verdict && verdict.fingerprint !== null) {
        fingerprints.set(id, verdict.fingerprint);
      }
    });
    tally.changes += changes.length;
    if (!run.dryRun) {
      const at = new Date(now());
      const results = await Promise.all(changes.map((c) => deps.writer.enqueue(syntheticJob(c, at))));
      for (const r of results) r.duplicate ? tally.duplicates++ : tally.queued++;
      // Only once their jobs are written: an interrupted run finds these changes again.
      await deps.seen.markAll(
        changes.flatMap((c) =>
          c.changedAt === null ? [] : [[recordKey(account, collection, c.id), c.changedAt] as const],
        ),
      );
      await deps.state.setFingerprints(account, collection, fingerprints);
    }
    tally.calls = api.calls;
    tally.quotaByMinute = api.quota.byMinute;
    tally.quotaByDay = api.quota.byDay;
    run.onProgress?.({ ...tally });
  }
  if (strategy.kind === 'rescan' && !run.dryRun) await deps.state.setLastScan(account, collection, startedAt);
  return tally;
}
