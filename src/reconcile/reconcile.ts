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
    for (const collection of run.types) {
      const plan = planOf(collection);
      if (plan === null) throw new Error(`no reconcile strategy for Sellsy collection ${JSON.stringify(collection)}`);
      tallies.push(await reconcileType(deps, run, account, api, plan));
    }
  }
  return tallies;
}

async function reconcileType(
  deps: ReconcileDeps,
  run: ReconcileRun,
  account: string,
  api: SellsyApi,
  plan: CollectionPlan,
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
  const start = strategy.kind === 'rescan' ? Math.min(run.since, run.until - run.lookbackMs) : run.since;
  const pages = searchPages(api, collection, {
    filters: { [strategy.filter]: { start: iso(start), end: iso(run.until) } },
    ...(run.signal ? { signal: run.signal } : {}),
    onRateLimited: () => {
      tally.rateLimited++;
    },
  });
  for await (const { objects } of pages) {
    const withIds = objects.filter((o) => typeof o.id === 'string' || typeof o.id === 'number');
    tally.found += objects.length;
    const ids = withIds.map((o) => String(o.id));
    const seen = await deps.seen.get(ids.map((id) => recordKey(account, collection, id)));
    const decide = strategy.kind === 'incremental' ? incremental : rescan;
    const { changes, fingerprints } = await decide();
    tally.changes += changes.length;
    if (!run.dryRun) {
      const at = new Date(now());
      const results = await Promise.all(changes.map((c) => deps.writer.enqueue(syntheticJob(c, at))));
      for (const r of results) r.duplicate ? tally.duplicates++ : tally.queued++;
      await Promise.all(
        changes
          .filter((c) => c.changedAt !== null)
          .map((c) => deps.seen.mark(recordKey(account, collection, c.id), c.changedAt as number)),
      );
      await deps.state.setFingerprints(account, collection, fingerprints);
    }
    tally.calls = api.calls;
    tally.quotaByMinute = api.quota.byMinute;
    tally.quotaByDay = api.quota.byDay;
    run.onProgress?.({ ...tally });

    async function incremental(): Promise<{ changes: Change[]; fingerprints: Map<string, string> }> {
      const changes: Change[] = [];
      const field = strategy.kind === 'incremental' ? strategy.changedAt : '';
      withIds.forEach((object, i) => {
        const time = typeof object[field] === 'string' ? Date.parse(object[field] as string) : Number.NaN;
        const changedAt = Number.isNaN(time) ? null : time;
        const seenAt = seen[i] ?? null;
        if (changedAt !== null && seenAt !== null && seenAt >= changedAt) {
          tally.alreadySeen++;
          return;
        }
        const fingerprint = changedAt === null ? fingerprintOf(object) : null;
        changes.push(changeOf(object, changedAt, fingerprint));
      });
      return { changes, fingerprints: new Map() };
    }

    async function rescan(): Promise<{ changes: Change[]; fingerprints: Map<string, string> }> {
      const stored = await deps.state.fingerprints(account, collection, ids);
      const changes: Change[] = [];
      const fingerprints = new Map<string, string>();
      const createdField = strategy.kind === 'rescan' ? strategy.created : '';
      // Objects without a fingerprint are new since the last scan, or (a backfill) created in the window.
      const newSince = run.backfill ? Math.min(run.since, lastScan ?? run.since) : lastScan;
      withIds.forEach((object, i) => {
        const id = ids[i] as string;
        const fingerprint = fingerprintOf(object);
        const before = stored[i] ?? null;
        if (before === fingerprint) {
          tally.unchanged++;
          return;
        }
        fingerprints.set(id, fingerprint);
        if (before === null) {
          const created = typeof object[createdField] === 'string' ? Date.parse(object[createdField] as string) : NaN;
          if (newSince === null || (!Number.isNaN(created) && created < newSince)) {
            tally.recorded++;
            return;
          }
        }
        const seenAt = seen[i] ?? null;
        if (lastScan !== null && seenAt !== null && seenAt > lastScan) {
          tally.alreadySeen++;
          return;
        }
        changes.push(changeOf(object, null, fingerprint));
      });
      return { changes, fingerprints };
    }
  }
  if (strategy.kind === 'rescan' && !run.dryRun) await deps.state.setLastScan(account, collection, startedAt);
  return tally;

  function changeOf(object: SellsyObject, changedAt: number | null, fingerprint: string | null): Change {
    return { account, collection, relatedType: plan.relatedType, id: String(object.id), changedAt, fingerprint };
  }
}
