/**
 * The listener's producer, from the configuration: the BullMQ producer, wrapped by the spool unless
 * `SPOOL_MAX_BYTES=0`. Shared by the CLI and the tests so both run what production runs.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { BullmqProducer, type BullmqProducerOptions, type Producer, producerOptionsFrom } from '../queue/producer.ts';
import { Spool, type SpoolRecovery } from '../spool/spool.ts';
import { drainCommandTimeoutMs, SpoolingProducer } from '../spool/spooling-producer.ts';

export interface ListenerProducer {
  /** What the listener calls. */
  producer: Producer;
  /** The Redis side. */
  queueProducer: BullmqProducer;
  /** Null when the spool is off. */
  spooling: SpoolingProducer | null;
  /** What the spool found on open (left by an earlier process), or null. */
  recovery: SpoolRecovery | null;
}

export async function openListenerProducer(
  config: Config,
  deps: { logger: Logger; metrics: Metrics },
  overrides: Partial<BullmqProducerOptions> = {},
): Promise<ListenerProducer> {
  const queueProducer = new BullmqProducer({ ...producerOptionsFrom(config), ...overrides });
  if (config.spool.maxBytes === 0) return { producer: queueProducer, queueProducer, spooling: null, recovery: null };
  let opened: Awaited<ReturnType<typeof Spool.open>>;
  try {
    opened = await Spool.open({ dir: config.spool.dir, maxBytes: config.spool.maxBytes, logger: deps.logger });
  } catch (err) {
    await queueProducer.close();
    throw err;
  }
  const options = { ...producerOptionsFrom(config), ...overrides };
  // The drain's own connection: its large batches must not hold up the live deliveries' writes.
  const drainQueue = new BullmqProducer({
    ...options,
    role: 'drain',
    commandTimeoutMs: drainCommandTimeoutMs(options.timeoutMs),
    onReady: undefined,
  });
  const spooling = new SpoolingProducer(queueProducer, opened.spool, {
    ackBudgetMs: config.spool.ackBudgetMs,
    drainQueue,
    logger: deps.logger,
    onDrained: (counts) => {
      deps.metrics.spoolDrained.inc({ result: 'queued' }, counts.queued);
      deps.metrics.spoolDrained.inc({ result: 'duplicate' }, counts.duplicate);
      deps.logger.info({ ...counts, spool: opened.spool.status() }, 'spooled deliveries moved to the queue');
    },
  });
  return { producer: spooling, queueProducer, spooling, recovery: opened.recovery };
}
