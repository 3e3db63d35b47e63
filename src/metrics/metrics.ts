/**
 * Prometheus metrics. One registry per process (or per app in tests), names prefixed `sellsy_webhooks_`,
 * labels with a small fixed set of values only.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * What happened to a delivery. `spooled`: answered 200 once durable in the local spool (queued later). `lost`:
 * answered 200 but neither queued nor spooled (logged at error level with the raw body). `refused`: answered 503.
 */
export const DELIVERY_OUTCOMES = [
  'accepted',
  'duplicate',
  'spooled',
  'bad_signature',
  'too_large',
  'lost',
  'refused',
] as const;
export type DeliveryOutcome = (typeof DELIVERY_OUTCOMES)[number];

export interface Metrics {
  registry: Registry;
  deliveries: Counter<'outcome'>;
  ackSeconds: Histogram;
  enqueueErrors: Counter<'reason'>;
  redisUp: Gauge;
  /** Deliveries read whose answer waits on the queue write (or the spool). */
  deliveriesWaiting: Gauge;
  spoolDepth: Gauge;
  spoolBytes: Gauge;
  spoolOldestAge: Gauge;
  spoolMaxBytes: Gauge;
  spoolQuarantined: Gauge;
  spoolDrained: Counter<'result'>;
  /** `ACK_WRITE=inbox`: entries in the inbox and their move into jobs. */
  inboxDepth: Gauge;
  inboxOldestAge: Gauge;
  inboxMoved: Counter<'result'>;
  moveLag: Histogram;
  /** Run before each scrape: gauges read from live objects (the producer, the spool, the queues). */
  beforeScrape: (() => void | Promise<void>)[];
  /** The exposition text, after the `beforeScrape` hooks. */
  scrape(): Promise<string>;
}

/**
 * `listener: false` (a `work`-only process): the listener's metrics (deliveries, acknowledgements, Redis, spool) are
 * kept out of the exposition, as nothing in the process sets them; a `sellsy_webhooks_redis_up` left at 0 would
 * raise the Redis-down alert for ever.
 */
export function createMetrics(options: { processMetrics?: boolean; listener?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry });
  const listenerRegisters = options.listener === false ? [] : [registry];
  const listenerGauge = (name: string, help: string) => new Gauge({ name, help, registers: listenerRegisters });
  /** Deliveries made jobs, by `result`: `queued` (a new job) or `duplicate`; both exported from the start. */
  const queuedOrDuplicate = (name: string, help: string) => {
    const counter = new Counter({ name, help, labelNames: ['result'] as const, registers: listenerRegisters });
    for (const result of ['queued', 'duplicate'] as const) counter.inc({ result }, 0);
    return counter;
  };
  const deliveries = new Counter({
    name: 'sellsy_webhooks_deliveries_total',
    help: 'Webhook deliveries received, by outcome.',
    labelNames: ['outcome'] as const,
    registers: listenerRegisters,
  });
  for (const outcome of DELIVERY_OUTCOMES) deliveries.inc({ outcome }, 0);
  const ackSeconds = new Histogram({
    name: 'sellsy_webhooks_ack_seconds',
    help: 'Time from request start to the answer to a webhook delivery that passed the checks (queued, spooled, duplicate, lost or refused).',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: listenerRegisters,
  });
  const enqueueErrors = new Counter({
    name: 'sellsy_webhooks_enqueue_errors_total',
    help: 'Failed writes of a delivery to the queue, by reason.',
    labelNames: ['reason'] as const,
    registers: listenerRegisters,
  });
  const redisUp = listenerGauge('sellsy_webhooks_redis_up', '1 when the listener can write to the queue, else 0.');
  const deliveriesWaiting = listenerGauge(
    'sellsy_webhooks_deliveries_waiting',
    'Deliveries read whose answer waits on the queue write or the spool; grows while Redis is slow.',
  );
  const spoolDepth = listenerGauge(
    'sellsy_webhooks_spool_deliveries',
    'Deliveries in the local spool, waiting for Redis.',
  );
  const spoolBytes = listenerGauge('sellsy_webhooks_spool_bytes', 'Size of the local spool files.');
  const spoolOldestAge = listenerGauge(
    'sellsy_webhooks_spool_oldest_age_seconds',
    'Age of the oldest delivery in the local spool (0 when empty).',
  );
  const spoolMaxBytes = listenerGauge(
    'sellsy_webhooks_spool_max_bytes',
    'SPOOL_MAX_BYTES: the size the spool may reach; past it deliveries are lost or refused.',
  );
  const spoolQuarantined = listenerGauge(
    'sellsy_webhooks_spool_quarantined',
    'Spooled deliveries Redis could not take, moved aside to quarantine-<n>.log in SPOOL_DIR (kept; `sellsy-webhooks spool drain` requeues them).',
  );
  const spoolDrained = queuedOrDuplicate(
    'sellsy_webhooks_spool_drained_total',
    'Spooled deliveries moved to the queue: queued (as their own job), or duplicate (an earlier delivery with the same bytes had a job).',
  );
  // Set by the listener's mover host with ACK_WRITE=inbox (src/listener/mover-host.ts); 0 with ACK_WRITE=job.
  const inboxDepth = listenerGauge(
    'sellsy_webhooks_inbox_deliveries',
    'Acknowledged deliveries in the Redis inbox not yet made jobs (ACK_WRITE=inbox), read from Redis when scraped.',
  );
  const inboxOldestAge = listenerGauge(
    'sellsy_webhooks_inbox_oldest_age_seconds',
    'Age of the oldest delivery in the Redis inbox (0 when empty): how far the mover is behind.',
  );
  const inboxMoved = queuedOrDuplicate(
    'sellsy_webhooks_inbox_moved_total',
    "Inbox entries made jobs by this process's mover: queued (a new job) or duplicate (folded into an earlier job).",
  );
  const moveLag = new Histogram({
    name: 'sellsy_webhooks_move_lag_seconds',
    help: 'Time from the receipt of a delivery to its BullMQ job, for deliveries moved from the inbox.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30],
    registers: listenerRegisters,
  });
  const beforeScrape: (() => void | Promise<void>)[] = [];
  return {
    beforeScrape,
    async scrape() {
      for (const hook of beforeScrape) await hook();
      return registry.metrics();
    },
    registry,
    deliveries,
    ackSeconds,
    enqueueErrors,
    redisUp,
    deliveriesWaiting,
    spoolDepth,
    spoolBytes,
    spoolOldestAge,
    spoolMaxBytes,
    spoolQuarantined,
    spoolDrained,
    inboxDepth,
    inboxOldestAge,
    inboxMoved,
    moveLag,
  };
}

/** What happened to a job run: `retry` failed and will run again, `dead_letter` failed for good, `rate_limited`
 * put back by a RetryLaterError, `handed_back` returned to the queue at shutdown. */
export const JOB_OUTCOMES = ['completed', 'retry', 'dead_letter', 'rate_limited', 'handed_back', 'postponed'] as const;
export type JobOutcome = (typeof JOB_OUTCOMES)[number];
/** `ingest`: the queue of deliveries; `records`: the record queue of RECORD_ORDER=latest. */
export type JobQueueLabel = 'ingest' | 'records';

export interface WorkerMetrics {
  jobs: Counter<'queue' | 'outcome'>;
  jobSeconds: Histogram<'queue'>;
  /** Attempts a job took, observed when it completes or becomes a dead letter. */
  jobAttempts: Histogram<'queue' | 'outcome'>;
}

/**
 * The worker's metrics, in the registry given (the listener's in `start`). The Sellsy API's figures are read when
 * scraped, through `collectors`; queue counts and dead letters come from src/metrics/queue-stats.ts.
 */
export function createWorkerMetrics(
  registry: Registry,
  collectors: {
    sellsyApi?: () => {
      calls: number;
      rateLimited: number;
      quota: Record<'bySecond' | 'byMinute' | 'byDay' | 'byMonth', number | null> & { at: number | null };
    };
  } = {},
): WorkerMetrics {
  const jobs = new Counter({
    name: 'sellsy_webhooks_jobs_total',
    help: 'Job runs by the worker, by queue and outcome.',
    labelNames: ['queue', 'outcome'] as const,
    registers: [registry],
  });
  for (const queue of ['ingest', 'records'] as const) {
    for (const outcome of JOB_OUTCOMES) jobs.inc({ queue, outcome }, 0);
  }
  const jobSeconds = new Histogram({
    name: 'sellsy_webhooks_job_duration_seconds',
    help: 'Time a job run took in the worker (its handlers), whatever the outcome.',
    labelNames: ['queue'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const jobAttempts = new Histogram({
    name: 'sellsy_webhooks_job_attempts',
    help: 'Attempts a job took, when it completed or became a dead letter.',
    labelNames: ['queue', 'outcome'] as const,
    buckets: [1, 2, 3, 4, 6, 8, 12, 20],
    registers: [registry],
  });
  const { sellsyApi } = collectors;
  if (sellsyApi) {
    new Counter({
      name: 'sellsy_webhooks_sellsy_api_calls_total',
      help: 'Calls to the Sellsy API by sellsy-fetch.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sellsyApi().calls);
      },
    });
    new Counter({
      name: 'sellsy_webhooks_sellsy_api_rate_limited_total',
      help: 'Sellsy API answers 429 (rate limited).',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sellsyApi().rateLimited);
      },
    });
    new Gauge({
      name: 'sellsy_webhooks_sellsy_api_quota_updated_timestamp_seconds',
      help: 'When the Sellsy API last sent its quota figures (unix seconds): the quota gauges are as of then.',
      registers: [registry],
      collect() {
        const { at } = sellsyApi().quota;
        if (at !== null) this.set(at / 1000);
      },
    });
    new Gauge({
      name: 'sellsy_webhooks_sellsy_api_quota_remaining',
      help: 'Sellsy API quota left, by window, as of the last answer (absent before the first).',
      labelNames: ['window'] as const,
      registers: [registry],
      collect() {
        const { quota } = sellsyApi();
        for (const [key, window] of [
          ['bySecond', 'second'],
          ['byMinute', 'minute'],
          ['byDay', 'day'],
          ['byMonth', 'month'],
        ] as const) {
          const value = quota[key];
          if (value !== null) this.set({ window }, value);
        }
      },
    });
  }
  return { jobs, jobSeconds, jobAttempts };
}

/** Per destination of the built-in `forward` (label `destination`: the names in DESTINATIONS_FILE, or `default`). */
export interface DestinationMetrics {
  sent(destination: string, seconds: number): void;
  failed(destination: string, seconds: number): void;
  breaker(destination: string, open: boolean): void;
  /** Destinations a reload added: their series start at 0, as those of the destinations configured at start. */
  declare(names: readonly string[]): void;
  /** A reload of DESTINATIONS_FILE: applied, or refused with the old list kept. */
  reloaded(result: 'ok' | 'refused'): void;
  /**
   * Destinations a reload removed: their breaker series go (an open one would otherwise alert for ever); their
   * counters stay, as counters do.
   */
  forget(names: readonly string[]): void;
}

export function createDestinationMetrics(registry: Registry, names: readonly string[]): DestinationMetrics {
  const labelNames = ['destination'] as const;
  const sent = new Counter({
    name: 'sellsy_webhooks_destination_sent_total',
    help: 'Events a destination took (answered 2xx), by destination.',
    labelNames,
    registers: [registry],
  });
  const failed = new Counter({
    name: 'sellsy_webhooks_destination_failed_total',
    help: 'Requests to a destination that failed (an error status, a network error or a timeout), by destination.',
    labelNames,
    registers: [registry],
  });
  const seconds = new Histogram({
    name: 'sellsy_webhooks_destination_request_seconds',
    help: 'Time a request to a destination took, whatever its outcome, by destination.',
    labelNames,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const breaker = new Gauge({
    name: 'sellsy_webhooks_destination_breaker_open',
    help: 'Circuit breaker of a destination as this worker last saw it: 1 open (requests paused, probing), 0 closed.',
    labelNames,
    registers: [registry],
  });
  const reloads = new Counter({
    name: 'sellsy_webhooks_destinations_reloads_total',
    help: 'Reloads of DESTINATIONS_FILE by this worker: ok (the new list applies) or refused (the old one kept).',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const declare = (list: readonly string[]) => {
    for (const destination of list) {
      sent.inc({ destination }, 0);
      failed.inc({ destination }, 0);
      breaker.set({ destination }, 0);
    }
  };
  declare(names);
  for (const result of ['ok', 'refused'] as const) reloads.inc({ result }, 0);
  return {
    declare,
    reloaded(result) {
      reloads.inc({ result });
    },
    forget(list) {
      for (const destination of list) breaker.remove({ destination });
    },
    sent(destination, s) {
      sent.inc({ destination });
      seconds.observe({ destination }, s);
    },
    failed(destination, s) {
      failed.inc({ destination });
      seconds.observe({ destination }, s);
    },
    breaker(destination, open) {
      breaker.set({ destination }, open ? 1 : 0);
    },
  };
}

/** How a periodic reconcile run ended: `skipped` when another process's run still held the reconcile lock. */
export const RECONCILE_OUTCOMES = ['success', 'failure', 'skipped'] as const;

export interface ReconcileMetrics {
  runs: Counter<'outcome'>;
  scanned: Counter<'collection'>;
  changes: Counter<'collection'>;
  duration: Histogram;
  errors: Counter<'collection'>;
}

/**
 * The periodic reconcile's metrics (src/reconcile/periodic.ts), in a worker's registry. Counters count the runs this
 * process made; the last success comes from Redis when scraped (`lastRuns`), so every worker exports the same one,
 * whichever ran it. Before the first success it is the time the periodic reconcile was turned on, so that the alert
 * on it also fires when no run ever succeeds.
 */
export function createReconcileMetrics(
  registry: Registry,
  intervalSeconds: number,
  lastSuccess: () => Promise<number | null>,
): ReconcileMetrics {
  const runs = new Counter({
    name: 'sellsy_webhooks_reconcile_runs_total',
    help: 'Periodic reconcile runs made by this process, by outcome (skipped: another run held the lock).',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  for (const outcome of RECONCILE_OUTCOMES) runs.inc({ outcome }, 0);
  const scanned = new Counter({
    name: 'sellsy_webhooks_reconcile_objects_scanned_total',
    help: 'Objects the periodic reconcile read from the Sellsy API, by Sellsy collection.',
    labelNames: ['collection'] as const,
    registers: [registry],
  });
  const changes = new Counter({
    name: 'sellsy_webhooks_reconcile_changes_total',
    help: 'Changes no webhook brought, found by the periodic reconcile, by Sellsy collection.',
    labelNames: ['collection'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'sellsy_webhooks_reconcile_duration_seconds',
    help: 'Time a periodic reconcile run took, whatever its outcome.',
    buckets: [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800],
    registers: [registry],
  });
  const errors = new Counter({
    name: 'sellsy_webhooks_reconcile_errors_total',
    help: 'Periodic reconcile runs that failed, by the Sellsy collection being read (none: outside a collection).',
    labelNames: ['collection'] as const,
    registers: [registry],
  });
  new Gauge({
    name: 'sellsy_webhooks_reconcile_interval_seconds',
    help: 'RECONCILE_INTERVAL_SECONDS: how often the periodic reconcile runs (0: off).',
    registers: [registry],
    collect() {
      this.set(intervalSeconds);
    },
  });
  new Gauge({
    name: 'sellsy_webhooks_reconcile_last_success_timestamp_seconds',
    help: 'When the last periodic reconcile run succeeded (unix seconds; before the first, when it was turned on).',
    registers: [registry],
    async collect() {
      try {
        const at = await lastSuccess();
        if (at !== null) this.set(at / 1000);
      } catch {
        // Redis unavailable: keep the last figure read (its own alerts cover Redis).
      }
    },
  });
  return { runs, scanned, changes, duration, errors };
}
