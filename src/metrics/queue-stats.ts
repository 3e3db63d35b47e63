/**
 * Queue figures read from Redis when `/metrics` is scraped: jobs by state (`sellsy_webhooks_queue_jobs`), the age of
 * the oldest waiting job, and the dead letters (the failed set), for the ingest queue and the record queue.
 *
 * BullMQ's own exporter (`Queue.exportPrometheusMetrics`) gives the counts as text under `bullmq_*` names, outside
 * prom-client's registry; these gauges keep the project's prefix and one registry. Their connection fails fast: a
 * scrape while Redis is down answers at once, without these series, instead of hanging.
 */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Gauge } from 'prom-client';
import type { Config } from '../config/config.ts';
import { recordQueueName } from '../worker/worker.ts';
import type { Metrics } from './metrics.ts';

/** A scrape waits this long at most for the queue figures. */
const SCRAPE_DEADLINE_MS = 2000;
const STATES = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'completed', 'failed'] as const;

export interface QueueStats {
  close(): Promise<void>;
}

export function watchQueues(metrics: Metrics, config: Config): QueueStats {
  const connection = new Redis(config.redisUrl, {
    connectionName: `${config.queueName}:stats`,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 2000,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
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
    const figures: { label: string; counts: Record<string, number>; oldestAge: number }[] = [];
    for (const [label, queue] of Object.entries(queues)) {
      const counts = await queue.getJobCounts(...STATES);
      // Oldest first: ascending order, first job.
      const [first] = await queue.getJobs(['wait'], 0, 0, true);
      figures.push({ label, counts, oldestAge: first ? Math.max(0, (Date.now() - first.timestamp) / 1000) : 0 });
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
      for (const state of STATES) jobs.set({ queue: label, state }, counts[state] ?? 0);
      deadLetters.set({ queue: label }, counts.failed ?? 0);
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
