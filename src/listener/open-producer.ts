/**
 * The listener's producer, from the configuration: the BullMQ producer, wrapped by the spool unless
 * `SPOOL_MAX_BYTES=0`. Shared by the CLI and the tests so both run what production runs.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { deferredRefusal, type WebhookJob, type WebhookJobData } from '../queue/contract.ts';
import { BullmqProducer, type BullmqProducerOptions, type Producer, producerOptionsFrom } from '../queue/producer.ts';
import { RecordReruns, recordKeyOf } from '../queue/records.ts';
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
  let reruns: RecordReruns | null = null;
  const onDuplicate = async (job: WebhookJob, client: Redis) => {
    if (recordKeyOf(job.data) === null || !signedForWorker(config, job.data)) return;
    reruns ??= new RecordReruns(client, producerOptionsFrom(config));
    if (await reruns.folded(job)) {
      deps.logger.info(
        { deliveryId: job.data.deliveryId, event: job.name },
        'duplicate delivery: its record runs again',
      );
    }
  };
  const options = { ...producerOptionsFrom(config), onDuplicate, ...overrides };
  const queueProducer = new BullmqProducer(options);
  if (config.spool.maxBytes === 0) return { producer: queueProducer, queueProducer, spooling: null, recovery: null };
  let opened: Awaited<ReturnType<typeof Spool.open>>;
  try {
    opened = await Spool.open({ dir: config.spool.dir, maxBytes: config.spool.maxBytes, logger: deps.logger });
  } catch (err) {
    await queueProducer.close();
    throw err;
  }
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

/**
 * A folded delivery runs its record again without passing the delivery stage, where `SIGNATURE_CHECK=worker` checks
 * signatures: an `unchecked` one is checked here instead (its bytes match an earlier delivery's, its header may not).
 * Duplicates are rare: this costs nothing on the path of new deliveries.
 */
function signedForWorker(config: Config, data: WebhookJobData): boolean {
  return deferredRefusal(config, data) === null;
}
