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
  spoolDepth: Gauge;
  spoolBytes: Gauge;
  spoolOldestAge: Gauge;
  spoolDrained: Counter<'result'>;
}

export function createMetrics(options: { processMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry });
  const deliveries = new Counter({
    name: 'sellsy_webhooks_deliveries_total',
    help: 'Webhook deliveries received, by outcome.',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  for (const outcome of DELIVERY_OUTCOMES) deliveries.inc({ outcome }, 0);
  const ackSeconds = new Histogram({
    name: 'sellsy_webhooks_ack_seconds',
    help: 'Time from request start to the answer to a webhook delivery.',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const enqueueErrors = new Counter({
    name: 'sellsy_webhooks_enqueue_errors_total',
    help: 'Failed writes of a delivery to the queue, by reason.',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const redisUp = new Gauge({
    name: 'sellsy_webhooks_redis_up',
    help: '1 when the listener can write to the queue, else 0.',
    registers: [registry],
  });
  const spoolDepth = new Gauge({
    name: 'sellsy_webhooks_spool_deliveries',
    help: 'Deliveries in the local spool, waiting for Redis.',
    registers: [registry],
  });
  const spoolBytes = new Gauge({
    name: 'sellsy_webhooks_spool_bytes',
    help: 'Size of the local spool files.',
    registers: [registry],
  });
  const spoolOldestAge = new Gauge({
    name: 'sellsy_webhooks_spool_oldest_age_seconds',
    help: 'Age of the oldest delivery in the local spool (0 when empty).',
    registers: [registry],
  });
  const spoolDrained = new Counter({
    name: 'sellsy_webhooks_spool_drained_total',
    help: 'Spooled deliveries moved to the queue: queued (as their own job), or duplicate (an earlier delivery with the same bytes had a job).',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  for (const result of ['queued', 'duplicate'] as const) spoolDrained.inc({ result }, 0);
  return {
    registry,
    deliveries,
    ackSeconds,
    enqueueErrors,
    redisUp,
    spoolDepth,
    spoolBytes,
    spoolOldestAge,
    spoolDrained,
  };
}
