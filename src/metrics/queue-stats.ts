/**
 * Queue figures read from Redis when `/metrics` is scraped: jobs by state (`sellsy_webhooks_queue_jobs`), the age of
 * the oldest waiting job, and the dead letters (the failed set), for the ingest queue and the record queue.
 *
 * BullMQ's own exporter (`Queue.exportPrometheusMetrics`) gives the counts as text under `bullmq_*` names, outside
 * prom-client's registry; these gauges keep the project's prefix and one registry. Their connection fails fast: a
 * scrape while Redis is down answers at once, without these series, instead of hanging.
 */
import { type Job, Queue } from 'bullmq';
import { Gauge } from 'prom-client';
import type { Config } from '../config/config.ts';
import { createConnection, redisSettingsOf } from '../queue/connection.ts';
import { recordQueueName } from '../queue/records.ts';
import type { Metrics } from './metrics.ts';

/** A scrape waits this long at most for the queue figures. */
const SCRAPE_DEADLINE_MS = 2000;
export const JOB_STATES = [
  'waiting',
  'active',
  'delayed',
  'prioritized',
  'waiting-children',
  'completed',
  'failed',
] as const;
export type JobCounts = Record<(typeof JOB_STATES)[number], number>;

/** Jobs by state and the oldest waiting job of a queue: what `/metrics` and `sellsy-webhooks stats` show. */
export async function readQueue(queue: Queue): Promise<{ counts: JobCounts; oldestWaiting: Job | null }> {
  const raw = await queue.getJobCounts(...JOB_STATES);
  const counts = Object.fromEntries(JOB_STATES.map((state) => [state, raw[state] ?? 0])) as JobCounts;
  // The wait list grows at its head: the oldest job is at the other end (ascending order, first one).
  const [oldest] = await queue.getJobs(['wait'], 0, 0, true);
  return { counts, oldestWaiting: oldest ?? null };
}

export interface QueueStats {
  close(): Promise<void>;
}

/** `now` is the clock the ages are measured with (tests age their jobs without waiting). */
export function watchQueues(metrics: Metrics, config: Config, now: () => number = Date.now): QueueStats {
  const connection = createConnection(redisSettingsOf(config), {
    role: 'fail-fast',
    name: `${config.queueName}:stats`,
    commandTimeoutMs: SCRAPE_DEADLINE_MS,
  });
  connection.on('error', () => undefined);
  const queues = {
    ingest: new Queue(config.queueName, { connection, prefix: config.queuePrefix }),
    records: new Queue(recordQueueName(config.queueName), { connection, prefix: config.queuePrefix }),
  };
  for (const q of Object.values(queues)) q.on('error', () => undefined);
  const { registry } = metrics;
  const jobs = new Gauge({
    name: 'sellsy_webhooks_queue_jobs',
    help: 'Jobs in the queue by state (ingest: one per delivery; records: RECORD_ORDER=latest), read from Redis.',
    labelNames: ['queue', 'state'] as const,
    registers: [registry],
  });
  const oldest = new Gauge({
    name: 'sellsy_webhooks_queue_oldest_waiting_age_seconds',
    help: 'Age of the oldest job waiting for a worker (0 when none waits): grows when workers fall behind.',
    labelNames: ['queue'] as const,
    registers: [registry],
  });
  const deadLetters = new Gauge({
    name: 'sellsy_webhooks_dead_letters',
    help: 'Jobs that failed for good, kept for inspection and `sellsy-webhooks replay` (the failed set), by queue.',
    labelNames: ['queue'] as const,
    registers: [registry],
  });
  const up = new Gauge({
    name: 'sellsy_webhooks_queue_stats_up',
    help: '1 when the queue figures of this scrape were read from Redis, 0 when Redis did not answer.',
    registers: [registry],
  });
  /** Reads every figure first; the gauges change only once all are in, so a scrape never shows half of them. */
  const read = async () => {
    const at = now();
    const figures: { label: string; counts: JobCounts; oldestAge: number }[] = [];
    for (const [label, queue] of Object.entries(queues)) {
      const { counts, oldestWaiting } = await readQueue(queue);
      figures.push({
        label,
        counts,
        oldestAge: oldestWaiting ? Math.max(0, (at - oldestWaiting.timestamp) / 1000) : 0,
      });
    }
    return figures;
  };
  // Scrapes that overlap (two Prometheus servers) share one read.
  let reading: Promise<Awaited<ReturnType<typeof read>>> | null = null;
  metrics.beforeScrape.push(async () => {
    let figures: Awaited<ReturnType<typeof read>> | null = null;
    // BullMQ waits for a connection that is not ready, however long Redis stays away: not asked then.
    if (connection.status === 'ready') {
      reading ??= read().finally(() => {
        reading = null;
      });
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), SCRAPE_DEADLINE_MS);
      });
      figures = await Promise.race([reading.catch(() => null), deadline]);
      clearTimeout(timer);
    }
    jobs.reset();
    oldest.reset();
    deadLetters.reset();
    up.set(figures ? 1 : 0);
    for (const { label, counts, oldestAge } of figures ?? []) {
      for (const state of JOB_STATES) jobs.set({ queue: label, state }, counts[state]);
      deadLetters.set({ queue: label }, counts.failed);
      oldest.set({ queue: label }, oldestAge);
    }
  });
  return {
    async close() {
      for (const q of Object.values(queues)) await q.close();
      connection.disconnect();
    },
  };
}
