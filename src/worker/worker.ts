/**
 * The worker runtime: BullMQ workers that run the handler chain (src/worker/pipeline.ts) on each job.
 *
 * Delivery guarantees (docs/handlers.md): at least once. A job is completed only after every handler resolved; a
 * crashed worker's job is run again once its lock expires (`WORKER_LOCK_MS`); retries use exponential backoff with
 * jitter (`JOB_ATTEMPTS`, `JOB_BACKOFF_MS`, set on each job by the listener); a job that failed for good stays in
 * BullMQ's failed set (the dead letters) for `JOB_KEEP_FAILED_SECONDS` and can be replayed.
 *
 * Queues:
 * - `QUEUE_NAME`: one job per delivery (the ingest queue the listener writes).
 * - `QUEUE_NAME-records` (only with `RECORD_ORDER=latest`): one job per record at a time. Its deduplication id is the
 *   record (`account:relatedtype:relatedid`) with BullMQ's `keepLastIfActive`: while a record's job waits, later
 *   deliveries for it add no job; while it runs, one more is queued for when it ends. Two jobs of one record
 *   therefore never run at the same time. A record job runs on the record's latest delivery (src/queue/latest.ts),
 *   so the deliveries whose job was folded away are not lost: the newest of them is the one handled.
 *   A delivery the ingest queue folded as a duplicate reaches this stage too: the listener offers it and adds a
 *   record job (src/queue/records.ts, `RecordReruns`).
 *
 * Webhook deliveries of a record also leave their receipt time (src/queue/seen.ts), for reconciliation.
 *
 * Deferred signatures (`SIGNATURE_CHECK=worker`): a job the listener queued `unchecked` is verified before any
 * handler. A refused one releases the deduplication key it took (a genuine delivery with the same bytes then makes a
 * job of its own) and fails for good; it is kept `BAD_SIGNATURE_KEEP_SECONDS` (src/worker/refused.ts).
 *
 * Shutdown: `close()` lets active jobs finish; past `SHUTDOWN_TIMEOUT_MS` minus a margin it aborts their signal and
 * hands them back to the queue (no attempt used), so another worker takes them at once.
 */
import { DelayedError, type Job, Queue, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Config } from '../config/config.ts';
import { PostponeError, RetryLaterError } from '../errors.ts';
import { type HandlerContext, handlersFor, type Registration } from '../handlers/handler.ts';
import { clipped } from '../logger.ts';
import { createDestinationMetrics, createWorkerMetrics, type JobQueueLabel } from '../metrics/metrics.ts';
import { closeForGood, createConnection, type RedisClient, redisSettingsOf } from '../queue/connection.ts';
import { deferredRefusal, type WebhookJobData } from '../queue/contract.ts';
import { LatestDeliveries, latestTtlMs } from '../queue/latest.ts';
import { recordJobOptions, recordKeyOf, recordQueueName } from '../queue/records.ts';
import { RecordSeen } from '../queue/seen.ts';
import { everyAccountClient } from '../reconcile/accounts.ts';
import { type PeriodicReconcile, removePeriodicSchedule, startPeriodicReconcile } from '../reconcile/periodic.ts';
import { startWebhookWatch, type WebhookWatch } from '../reconcile/webhook-watch.ts';

import { type DestinationsReload, startDestinationsReload } from './destinations-reload.ts';
import { attributed, RefusedSignatureError, rateLimitMs } from './job-errors.ts';
import { buildPipeline, type Pipeline, type PipelineOptions } from './pipeline.ts';
import { RefusedDeadLetters } from './refused.ts';

export interface RunningWorker {
  /** The ingest-queue worker. */
  worker: Worker<WebhookJobData>;
  /** The record-queue worker (`RECORD_ORDER=latest`), else null. */
  recordWorker: Worker<WebhookJobData> | null;
  pipeline: Pipeline;
  /** Every Redis connection the worker opened is connected and ready (ioredis `status === 'ready'`): its readiness. */
  ready(): boolean;
  /** Reads DESTINATIONS_FILE again (SIGUSR2; src/worker/destinations-reload.ts). */
  reloadDestinations: DestinationsReload['reload'];
  close(): Promise<void>;
}

export interface WorkerOptions extends PipelineOptions {
  /** Registers the worker's metrics there (the listener's registry in `start`). */
  registry?: Registry;
  /** The periodic reconcile's quota minute, in ms (tests shorten it). */
  reconcileMinuteMs?: number;
  /** How often Sellsy's view of the webhooks is read, in ms (tests shorten it). */
  webhookWatchIntervalMs?: number;
  /** Where a reload of DESTINATIONS_FILE reads the secret variables; default: the process's environment. */
  env?: NodeJS.ProcessEnv;
}

export async function startWorker(config: Config, logger: Logger, options: WorkerOptions = {}): Promise<RunningWorker> {
  const log = logger.child({ component: 'worker' });
  const { registry } = options;
  const destinationNames = config.destinations.map((d) => d.name);
  const destinationMetrics = registry ? createDestinationMetrics(registry, destinationNames) : null;
  const pipeline = await buildPipeline(config, log, {
    ...options,
    ...(destinationMetrics ? { destinationObserver: destinationMetrics } : {}),
  });
  const connections: RedisClient[] = [];
  const redis = redisSettingsOf(config);
  const connect = (name: string) => createConnection(redis, { role: 'worker', name });
  const recordMode = config.worker.recordOrder === 'latest';
  let recordQueue: Queue<WebhookJobData> | null = null;
  let latest: LatestDeliveries | null = null;
  if (recordMode) {
    const client = connect(`${config.queueName}:record-producer`);
    client.on('error', () => undefined); // reported by the workers' own connections
    connections.push(client);
    const name = recordQueueName(config.queueName);
    recordQueue = new Queue<WebhookJobData>(name, { connection: client, prefix: config.queuePrefix });
    recordQueue.on('error', () => undefined);
    latest = new LatestDeliveries(client, `${config.queuePrefix}:${name}`, latestTtlMs(config));
  }
  // When each record's latest webhook came: reconciliation queues no change a webhook brought after it.
  const seenClient = connect(`${config.queueName}:seen`);
  seenClient.on('error', () => undefined); // reported by the workers' own connections
  connections.push(seenClient);
  const seen = RecordSeen.of(seenClient, config.queuePrefix, config.queueName);
  let refused: RefusedDeadLetters | null = null;
  let sweepTimer: NodeJS.Timeout | null = null;
  const sweep = () => {
    refused?.sweep().catch((err: Error) => log.warn({ err: err.message }, 'refused dead letters: sweep failed'));
  };
  if (config.signature.check === 'worker') {
    const client = connect(`${config.queueName}:refused`);
    client.on('error', () => undefined); // reported by the workers' own connections
    connections.push(client);
    const queue = new Queue(config.queueName, { connection: client, prefix: config.queuePrefix });
    queue.on('error', () => undefined);
    refused = new RefusedDeadLetters(client, queue, config.signature.badSignatureKeepSeconds);
    // Refusals sweep as they happen; the timer covers the ones that expire while none comes.
    sweepTimer = setInterval(sweep, Math.min(Math.max(config.signature.badSignatureKeepSeconds, 1), 60) * 1000);
    sweepTimer.unref();
    sweep();
  }
  const api = pipeline.sellsyApi;
  const metrics = registry ? createWorkerMetrics(registry, api ? { sellsyApi: () => api } : {}) : null;
  const queueLabel = (stage: 'delivery' | 'record'): JobQueueLabel => (stage === 'record' ? 'records' : 'ingest');
  let stopping = false;

  const workerOptions = (name: string) => {
    const connection = connect(name);
    connections.push(connection);
    return {
      connection,
      prefix: config.queuePrefix,
      concurrency: config.worker.concurrency,
      lockDuration: config.worker.lockMs,
      stalledInterval: config.worker.lockMs,
      // A limiter is what makes BullMQ honour a manual rate limit (RetryLaterError); this one never limits by itself.
      limiter: { max: 1_000_000_000, duration: 1000 },
    };
  };

  /** Runs the matching handlers in order; the failing handler's name leads the error message (the failed reason). */
  async function run(registrations: readonly Registration[], ctx: HandlerContext) {
    for (const { handler, source, pattern } of handlersFor(registrations, ctx.name)) {
      try {
        await handler(ctx.data.event, ctx);
      } catch (err) {
        throw attributed(err, `[${source} ${pattern}]`);
      }
    }
  }

  function contextOf(
    name: string,
    data: WebhookJobData,
    job: Job<WebhookJobData>,
    signal: AbortSignal | undefined,
  ): HandlerContext {
    return {
      deliveryId: data.deliveryId,
      name,
      data,
      attempt: job.attemptsMade + 1,
      attempts: job.opts.attempts ?? 1,
      signal: signal ?? new AbortController().signal,
      log: log.child({ jobId: job.id, deliveryId: data.deliveryId, event: name }),
    };
  }

  /**
   * `forward`'s step before the chain (src/handlers/destinations.ts, `prepare`): the event a job bound for one
   * destination runs on, or its postponement while that destination's breaker is open, before `sellsy-fetch` calls
   * the Sellsy API for nothing. Its errors are `forward`'s.
   */
  async function prepared(name: string, data: WebhookJobData, job: Job<WebhookJobData>) {
    const set = pipeline.destinations;
    if (set === null) return { name, data };
    try {
      return await set.prepare(name, data, log.child({ jobId: job.id, deliveryId: data.deliveryId, event: name }));
    } catch (err) {
      throw attributed(err, '[forward *]');
    }
  }

  /** Wraps a stage: logging, RetryLaterError → rate limit, shutdown → hand back. */
  function processor(
    stage: 'delivery' | 'record',
    body: (job: Job<WebhookJobData>, signal: AbortSignal | undefined) => Promise<string>,
  ) {
    return async (job: Job<WebhookJobData>, token?: string, signal?: AbortSignal) => {
      const started = performance.now();
      const queue = queueLabel(stage);
      let outcome: string;
      try {
        outcome = await body(job, signal);
      } catch (err) {
        if (err instanceof RetryLaterError) {
          const delayMs = rateLimitMs(err.delayMs);
          log.warn({ jobId: job.id, event: job.name, stage, delayMs, err: err.message }, 'slowing down');
          metrics?.jobs.inc({ queue, outcome: 'rate_limited' });
          await (stage === 'record' ? recordWorker : worker)?.rateLimit(delayMs);
          throw Worker.RateLimitError();
        }
        if (err instanceof PostponeError) {
          // Postponed without spending an attempt while the job is young enough; past that it fails as any attempt.
          if (err.at - job.timestamp > err.maxPauseMs || token === undefined) throw new Error(err.message);
          await job.moveToDelayed(err.at, token);
          log.info({ jobId: job.id, event: job.name, stage, until: new Date(err.at).toISOString() }, 'job postponed');
          metrics?.jobs.inc({ queue, outcome: 'postponed' });
          throw new DelayedError();
        }
        if (stopping && signal?.aborted) {
          await job.moveToWait(token);
          log.info({ jobId: job.id, event: job.name, stage }, 'job handed back at shutdown');
          metrics?.jobs.inc({ queue, outcome: 'handed_back' });
          throw new WaitingError();
        }
        throw err;
      } finally {
        metrics?.jobSeconds.observe({ queue }, (performance.now() - started) / 1000);
      }
      metrics?.jobs.inc({ queue, outcome: 'completed' });
      metrics?.jobAttempts.observe({ queue, outcome: 'completed' }, job.attemptsMade + 1);
      log.info(
        {
          reqId: job.data.request?.id,
          jobId: job.id,
          deliveryId: job.data.deliveryId,
          event: job.name,
          stage,
          account: clipped(job.data.account),
          relatedId: clipped(job.data.event?.relatedId ?? null),
          signature: job.data.signature.status,
          attempt: job.attemptsMade + 1,
          ms: Math.round((performance.now() - started) * 100) / 100,
          outcome,
        },
        'job processed',
      );
    };
  }

  // The chains, in the order they run. `postgres` before `sellsy-fetch`: a delivery is stored even when its object
  // cannot be fetched. A delivery with a record (RECORD_ORDER=latest) runs only `store` here; the rest runs on the
  // record stage.
  const recordChain = [...pipeline.fetch, ...pipeline.handlers];
  const fullChain = [...pipeline.store, ...recordChain];
  // An `unknown` job has no record: it always meets the full chain.
  const catchUpChain = [...pipeline.fetch, ...pipeline.handlers.filter((r) => r.source === 'forward')];
  // `forward` is registered for `unknown` whenever a reload could bring a destination taking it: whether one does is
  // asked of the list in use.
  const othersTakeUnknown = handlersFor(
    fullChain.filter((r) => r.source !== 'forward'),
    'unknown',
  ).length;
  const unknownHandled = () => othersTakeUnknown > 0 || pipeline.destinations?.takes('unknown') === true;

  const deliveryStage = processor('delivery', async (job, signal) => {
    const refusal = deferredRefusal(config, job.data);
    if (refusal !== null) {
      // Anyone could have posted it: it must not keep the key a genuine delivery of the same bytes would take.
      await job.removeDeduplicationKey();
      if (job.id !== undefined) await refused?.add(job.id);
      throw new RefusedSignatureError(refusal);
    }
    if (job.data.onlyDestination !== undefined) {
      // A retry or catch-up job: the object is fetched again, and only `forward` sends it.
      const next = await prepared(job.name, job.data, job);
      await run(catchUpChain, contextOf(next.name, next.data, job, signal));
      return next.data.deliveryId === job.data.deliveryId
        ? `completed: sent to ${job.data.onlyDestination}`
        : `completed: sent the later delivery ${next.data.deliveryId} to ${job.data.onlyDestination}`;
    }
    const recordKey = recordKeyOf(job.data);
    // Beside the handlers, not before them: a mark lost to a Redis error costs at worst a reconciled job for a change
    // this delivery brought, not a retry of the handlers.
    const marked =
      recordKey !== null && job.data.source !== 'reconcile'
        ? seen
            .mark(recordKey, Date.parse(job.data.receivedAt) || Date.now())
            .catch((err: Error) => log.warn({ jobId: job.id, err: err.message }, 'record seen time not written'))
        : null;
    const record = recordQueue ? recordKey : null;
    if (job.name === 'unknown' && !unknownHandled()) {
      throw new UnrecoverableError(
        `not a Sellsy event (${job.data.parseProblem ?? 'no relatedtype/event'}) and no handler for "unknown": kept as a dead letter`,
      );
    }
    const ctx = contextOf(job.name, job.data, job, signal);
    // Stored first even while the only destination's breaker postpones the rest.
    await run(pipeline.store, ctx);
    if (record === null) {
      await prepared(job.name, job.data, job);
      await run(recordChain, ctx);
    }
    await marked;
    if (record !== null && recordQueue && latest) {
      await latest.offer(record, job.name, job.data);
      await recordQueue.add(job.name, job.data, recordJobOptions(config, record, job.data.deliveryId));
      return 'completed: record job queued';
    }
    return 'completed';
  });

  const recordStage = processor('record', async (job, signal) => {
    const record = recordKeyOf(job.data);
    const newest = record !== null && latest ? await latest.get(record) : null;
    if (newest?.done) return 'completed: the latest delivery of this record was already handled';
    const ctx = contextOf(newest?.name ?? job.name, newest?.data ?? job.data, job, signal);
    await prepared(ctx.name, ctx.data, job);
    await run(recordChain, ctx);
    if (record !== null && latest) await latest.markDone(record, ctx.deliveryId);
    return ctx.deliveryId === job.data.deliveryId
      ? 'completed'
      : `completed: ran on the later delivery ${ctx.deliveryId}`;
  });

  const worker = new Worker<WebhookJobData>(
    config.queueName,
    deliveryStage,
    workerOptions(`${config.queueName}:worker`),
  );
  const recordWorker = recordMode
    ? new Worker<WebhookJobData>(
        recordQueueName(config.queueName),
        recordStage,
        workerOptions(`${config.queueName}:record-worker`),
      )
    : null;

  for (const w of [worker, recordWorker]) {
    if (!w) continue;
    let lastError = '';
    w.on('error', (err) => {
      if (err.message !== lastError) log.warn({ queue: w.name, err: err.message }, 'worker connection error');
      lastError = err.message;
    });
    w.on('ready', () => {
      if (lastError) log.info({ queue: w.name }, 'worker reconnected');
      lastError = '';
    });
    const queue: JobQueueLabel = w === recordWorker ? 'records' : 'ingest';
    w.on('failed', (job, err) => {
      if (!job) return;
      const final = err instanceof UnrecoverableError || job.attemptsMade >= (job.opts.attempts ?? 1);
      metrics?.jobs.inc({ queue, outcome: final ? 'dead_letter' : 'retry' });
      if (final) metrics?.jobAttempts.observe({ queue, outcome: 'dead_letter' }, job.attemptsMade);
      if (err instanceof RefusedSignatureError) sweep();
      log[final ? 'error' : 'warn'](
        {
          reqId: job.data.request?.id,
          jobId: job.id,
          deliveryId: job.data.deliveryId,
          event: job.name,
          account: clipped(job.data.account),
          relatedId: clipped(job.data.event?.relatedId ?? null),
          queue: w.name,
          attempt: job.attemptsMade,
          attempts: job.opts.attempts ?? 1,
          err: err.message,
          outcome: final ? 'dead_letter' : 'retry',
        },
        final ? 'job failed for good: kept as a dead letter' : 'job failed: will retry',
      );
    });
  }
  // RECONCILE_INTERVAL_SECONDS: the periodic reconcile (src/reconcile/periodic.ts), one run at a time across workers.
  const periodic: PeriodicReconcile | null =
    config.reconcile.intervalSeconds > 0
      ? await startPeriodicReconcile(config, log, {
          sellsyApi: pipeline.sellsyApi,
          ...(options.registry ? { registry: options.registry } : {}),
          ...(options.reconcileMinuteMs ? { minuteMs: options.reconcileMinuteMs } : {}),
        })
      : null;
  if (periodic === null) {
    removePeriodicSchedule(seenClient, config).catch((err: Error) => {
      if (!stopping) log.warn({ err: err.message }, 'periodic reconcile: its schedule could not be removed');
    });
  }
  // Sellsy's view of the webhooks posting here, as metrics (src/reconcile/webhook-watch.ts), read with each account's
  // client: sellsy-fetch's when it has one (its quota figures and 429s), else one of its own.
  const webhookReaders = registry ? everyAccountClient(config, pipeline.sellsyApi) : [];
  const webhookWatch: WebhookWatch | null =
    webhookReaders.length > 0 && registry
      ? startWebhookWatch({
          client: seenClient,
          readers: webhookReaders,
          keyPrefix: `${config.queuePrefix}:${config.queueName}`,
          registry,
          log,
          ...(options.webhookWatchIntervalMs ? { intervalMs: options.webhookWatchIntervalMs } : {}),
        })
      : null;
  // Last: nothing after it can fail the start and leave its connection open.
  const reloader = startDestinationsReload(
    config,
    pipeline.destinations,
    options.env ?? process.env,
    log,
    destinationMetrics,
  );
  log.info(
    {
      queue: config.queueName,
      recordQueue: recordQueue?.name ?? null,
      concurrency: config.worker.concurrency,
      handlers: fullChain.map((r) => `${r.source}:${r.pattern}`),
      destinations: destinationNames,
    },
    'worker started',
  );

  return {
    worker,
    recordWorker,
    pipeline,
    ready: () => connections.every((c) => c.status === 'ready'),
    reloadDestinations: reloader.reload,
    async close() {
      stopping = true;
      reloader.close();
      webhookWatch?.close();
      await periodic?.close();
      const workers = [worker, recordWorker].filter((w): w is Worker<WebhookJobData> => w !== null);
      // Past the grace period, handlers are aborted and their jobs handed back rather than cut off by the exit.
      const grace = Math.max(config.shutdownTimeoutMs - 2000, config.shutdownTimeoutMs / 2);
      const timer = setTimeout(() => {
        for (const w of workers) w.cancelAllJobs('shutdown');
      }, grace);
      try {
        // With Redis away no job can be finished nor handed back: waiting would only use up the shutdown time (the
        // jobs are taken again once their lock expires).
        const redisAway = connections.every((c) => c.status !== 'ready');
        if (redisAway) log.warn('redis unavailable at shutdown: active jobs are left to expire and be taken again');
        await Promise.all(workers.map((w) => w.close(redisAway)));
      } finally {
        clearTimeout(timer);
      }
      if (sweepTimer) clearInterval(sweepTimer);
      await refused?.close();
      await recordQueue?.close();
      await pipeline.close();
      // BullMQ's blocking copies of them too: after a close with Redis away, one could otherwise reconnect for ever.
      for (const c of connections) closeForGood(c);
    },
  };
}
