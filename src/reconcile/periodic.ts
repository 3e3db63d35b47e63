/**
 * The periodic reconcile (`RECONCILE_INTERVAL_SECONDS` > 0), run by the workers: every interval, one reconcile run
 * (src/reconcile/reconcile.ts) over every account and collection, from a cursor kept in Redis.
 *
 * One run at a time across every worker process. Each process upserts the same BullMQ job scheduler (id `periodic`,
 * `every` the interval) on a small queue of its own, `<QUEUE_NAME>-reconcile` under `QUEUE_PREFIX` (on a Cluster the
 * prefix's hash tag keeps its keys in the queue's slot, as for the record queue); the upsert is idempotent, so the
 * scheduler makes one job per interval however many workers run, and each process takes them with concurrency 1.
 * A scheduler alone is not enough: BullMQ schedules the next iteration when a job starts, so a run longer than the
 * interval would meet the next one in another process. So a run also takes a lock (`<prefix>:<queue>:reconcile:lock`,
 * renewed while it runs, expiring `WORKER_LOCK_MS` after a crash); a job that finds it taken ends as `skipped`.
 * A lock without the scheduler would need every process to wake each interval and race; the scheduler keeps one job
 * per interval in Redis, visible in the queue, and survives restarts.
 *
 * Window: `[cursor - overlap, now]`; the cursor is the end of the last successful window, moved only when a run
 * succeeds. The first run sets it to `now - interval` before reading, so a first run killed mid-way is covered by the
 * next as any other. A run killed or failed mid-way thus leaves the cursor where it was and the next run reads its
 * window again: what it had queued is folded by the jobs' deduplication ids and the records' seen times.
 * Not a backfill: the first scan of a rescan type only records fingerprints.
 */
import { randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Config } from '../config/config.ts';
import { createReconcileMetrics, type ReconcileMetrics } from '../metrics/metrics.ts';
import { closeForGood, createConnection, type RedisClient, redisSettingsOf } from '../queue/connection.ts';
import { BullmqProducer } from '../queue/producer.ts';
import { producerOptionsFrom } from '../queue/producer-options.ts';
import { RecordSeen } from '../queue/seen.ts';
import { untilReady } from '../queue/writer.ts';
import type { SellsyAccounts } from '../sellsy/api.ts';
import { accountClients } from './accounts.ts';
import { DEFAULT_TYPES } from './collections.ts';
import { reconcile, type Tally } from './reconcile.ts';
import { type LastRun, ReconcileState } from './state.ts';

export const reconcileQueueName = (queueName: string): string => `${queueName}-reconcile`;

export interface PeriodicOptions {
  registry?: Registry;
  /** The length of a quota minute (tests shorten it). */
  minuteMs?: number;
  /** The worker's Sellsy API clients (sellsy-fetch's), shared: one token and one quota view per account. */
  sellsyApi?: SellsyAccounts | null;
}

export interface PeriodicReconcile {
  close(): Promise<void>;
}

const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

/**
 * With the periodic reconcile off (`RECONCILE_INTERVAL_SECONDS=0`): removes its scheduler and the job it had waiting,
 * left by workers that ran it, so that it does not start again with a worker of an older configuration by surprise.
 */
export async function removePeriodicSchedule(client: RedisClient, config: Config): Promise<void> {
  const queue = new Queue(reconcileQueueName(config.queueName), { connection: client, prefix: config.queuePrefix });
  queue.on('error', () => undefined);
  try {
    await queue.removeJobScheduler('periodic');
  } finally {
    await queue.close();
  }
}

type Outcome = { outcome: 'skipped' } | { outcome: 'success' | 'failure'; run: LastRun };

export async function startPeriodicReconcile(
  config: Config,
  logger: Logger,
  options: PeriodicOptions = {},
): Promise<PeriodicReconcile> {
  const log = logger.child({ component: 'reconcile' });
  const intervalMs = config.reconcile.intervalSeconds * 1000;
  const overlapMs = config.reconcile.overlapSeconds * 1000;
  const lockMs = config.worker.lockMs;
  const accounts = accountClients(config, 'the periodic reconcile', (message) => log.warn(message), options.sellsyApi);
  const producer = new BullmqProducer({ ...producerOptionsFrom(config), role: 'reconcile' });
  const redis = redisSettingsOf(config);
  const connections: RedisClient[] = [];
  const connect = (name: string) => {
    const c = createConnection(redis, { role: 'worker', name: `${config.queueName}:${name}` });
    c.on('error', () => undefined); // the worker's own connections report Redis errors
    connections.push(c);
    return c;
  };
  // A worker connection (commands wait for Redis) for the run's state; the producer's fails fast, for the jobs.
  const client = connect('reconcile');
  const state = new ReconcileState(client, config.queuePrefix, config.queueName);
  const seen = RecordSeen.of(client, config.queuePrefix, config.queueName);
  const lockKey = `${config.queuePrefix}:${config.queueName}:reconcile:lock`;
  const metrics: ReconcileMetrics | null = options.registry
    ? createReconcileMetrics(options.registry, config.reconcile.intervalSeconds, async () => {
        const { lastSuccess, enabledAt } = await state.runs();
        return lastSuccess ? Date.parse(lastSuccess.at) : enabledAt;
      })
    : null;

  const name = reconcileQueueName(config.queueName);
  const queue = new Queue(name, { connection: connect('reconcile-queue'), prefix: config.queuePrefix });
  queue.on('error', () => undefined);
  // Not awaited: a worker starts while Redis is away, and schedules once it is back.
  const scheduled = (async () => {
    await state.markEnabled(Date.now());
    await queue.upsertJobScheduler(
      'periodic',
      { every: intervalMs },
      { name: 'reconcile', opts: { attempts: 1, removeOnComplete: 100, removeOnFail: 100 } },
    );
  })();
  scheduled.catch((err: Error) => log.error({ err: err.message }, 'periodic reconcile: could not be scheduled'));

  let current: AbortController | null = null;

  async function runOnce(signal: AbortSignal): Promise<Outcome> {
    // The jobs' writer fails fast: give it the time to connect (a run starts with the process).
    await untilReady(producer, lockMs, signal);
    const token = randomUUID();
    if ((await client.set(lockKey, token, 'PX', lockMs, 'NX')) === null) return { outcome: 'skipped' };
    const abort = new AbortController();
    const onStop = () => abort.abort(signal.reason);
    signal.addEventListener('abort', onStop, { once: true });
    // Renewed while the run lasts; lost (Redis away longer than the lock), the run stops: another may start.
    const renew = setInterval(() => {
      client
        .eval(RENEW, 1, lockKey, token, lockMs)
        .then((kept) => {
          if (kept === 0) abort.abort(new Error('the reconcile lock was lost'));
        })
        .catch(() => undefined);
    }, lockMs / 3);
    const startedAt = Date.now();
    const tallies: Tally[] = [];
    let since = startedAt;
    try {
      const cursor = await state.initCursor(startedAt - intervalMs);
      since = cursor - overlapMs;
      const result = await reconcile(
        {
          accounts,
          writer: producer,
          state,
          seen,
          quotaShare: config.reconcile.quotaShare,
          ...(options.minuteMs ? { minuteMs: options.minuteMs } : {}),
        },
        {
          since,
          until: startedAt,
          lookbackMs: config.reconcile.lookbackSeconds * 1000,
          types: DEFAULT_TYPES,
          dryRun: false,
          backfill: false,
          signal: abort.signal,
          onProgress: (t) => {
            const i = tallies.findIndex((x) => x.account === t.account && x.collection === t.collection);
            if (i === -1) tallies.push(t);
            else tallies[i] = t;
          },
        },
      );
      tallies.splice(0, tallies.length, ...result);
      await state.setCursor(startedAt);
      return { outcome: 'success', run: summary('success', since, startedAt, tallies) };
    } catch (err) {
      if (signal.aborted) throw err; // shutdown: not a failure of the run, the next one covers its window
      const message = (err as Error).message?.split('\n')[0]?.slice(0, 300) ?? String(err);
      const collection = (err as { collection?: string }).collection ?? 'none';
      metrics?.errors.inc({ collection });
      log.error({ err: message, collection }, 'reconcile run failed: the next run reads its window again');
      return { outcome: 'failure', run: { ...summary('failure', since, startedAt, tallies), error: message } };
    } finally {
      clearInterval(renew);
      signal.removeEventListener('abort', onStop);
      await client.eval(RELEASE, 1, lockKey, token).catch(() => undefined);
    }
  }

  const worker = new Worker(
    name,
    async (job, _token, signal) => {
      const controller = new AbortController();
      current = controller;
      signal?.addEventListener('abort', () => controller.abort(signal.reason), { once: true });
      const started = performance.now();
      try {
        const result = await runOnce(controller.signal);
        metrics?.runs.inc({ outcome: result.outcome });
        if (result.outcome === 'skipped') {
          log.info({ jobId: job.id }, 'reconcile run skipped: another one is running');
          return 'skipped';
        }
        const { run } = result;
        metrics?.duration.observe((performance.now() - started) / 1000);
        await state.recordRun(run);
        if (run.outcome === 'success') {
          log.info(
            { since: run.since, until: run.until, scanned: run.scanned, changes: run.changes, queued: run.queued },
            'reconcile run done',
          );
        }
        return run.outcome;
      } finally {
        current = null;
      }
    },
    {
      connection: connect('reconcile-worker'),
      prefix: config.queuePrefix,
      concurrency: 1,
      lockDuration: lockMs,
      stalledInterval: lockMs,
      // A run killed with its process is not run again as such: the next interval's run reads its window.
      maxStalledCount: 0,
    },
  );
  let lastError = '';
  worker.on('error', (err) => {
    if (err.message !== lastError) log.warn({ queue: name, err: err.message }, 'reconcile worker connection error');
    lastError = err.message;
  });

  function summary(outcome: 'success' | 'failure', since: number, until: number, tallies: Tally[]): LastRun {
    const sum = (f: (t: Tally) => number) => tallies.reduce((n, t) => n + f(t), 0);
    for (const t of tallies) {
      metrics?.scanned.inc({ collection: t.collection }, t.found);
      metrics?.changes.inc({ collection: t.collection }, t.changes);
    }
    return {
      at: new Date().toISOString(),
      outcome,
      since: new Date(since).toISOString(),
      until: new Date(until).toISOString(),
      durationSeconds: Math.round((Date.now() - until) / 100) / 10,
      scanned: sum((t) => t.found),
      changes: sum((t) => t.changes),
      queued: sum((t) => t.queued),
    };
  }

  log.info(
    { queue: name, intervalSeconds: config.reconcile.intervalSeconds, accounts: accounts.map((a) => a.account) },
    'periodic reconcile scheduled',
  );
  return {
    async close() {
      current?.abort(new Error('shutdown'));
      await worker.close();
      await queue.close();
      await producer.close();
      for (const c of connections) closeForGood(c);
    },
  };
}
