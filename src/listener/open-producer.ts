/**
 * The listener's producer, from the configuration: the BullMQ producer, wrapped by the spool unless
 * `SPOOL_MAX_BYTES=0`. Shared by the CLI and the tests so both run what production runs.
 */

import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { RedisClient } from '../queue/connection.ts';
import { deferredRefusal, type WebhookJob, type WebhookJobData } from '../queue/contract.ts';
import { BullmqProducer } from '../queue/producer.ts';
import { type BullmqProducerOptions, producerOptionsFrom } from '../queue/producer-options.ts';
import { RecordReruns, recordKeyOf } from '../queue/records.ts';
import type { Producer } from '../queue/writer.ts';
import type { SpoolRecovery } from '../spool/recovery.ts';
import { Spool } from '../spool/spool.ts';
import { drainCommandTimeoutMs, SpoolingProducer } from '../spool/spooling-producer.ts';
import { type MoverHost, startMoverHost } from './mover-host.ts';

export interface ListenerProducer {
  /** What the listener calls. */
  producer: Producer;
  /** The Redis side. */
  queueProducer: BullmqProducer;
  /** Null when the spool is off. */
  spooling: SpoolingProducer | null;
  /** What the spool found on open (left by an earlier process), or null. */
  recovery: SpoolRecovery | null;
  /** `ACK_WRITE=inbox`: the thread that makes the inbox's entries jobs; null with `ACK_WRITE=job`. */
  mover: MoverHost | null;
  /** Stops the mover and closes the producer (after the listener stopped taking requests). */
  close(): Promise<void>;
}

export async function openListenerProducer(
  config: Config,
  deps: { logger: Logger; metrics: Metrics },
  overrides: Partial<BullmqProducerOptions> = {},
): Promise<ListenerProducer> {
  // With a spool, a delivery whose confirmation (WAIT, WAITAOF) does not come within the ack budget is spooled too.
  const confirmTimeoutMs = config.spool.maxBytes > 0 ? config.spool.ackBudgetMs : config.enqueueTimeoutMs;
  const base = { ...producerOptionsFrom(config), confirmTimeoutMs, ...overrides };
  const queueProducer = new BullmqProducer({
    onDuplicate: rerunFoldedRecords(config, deps.logger, base),
    inbox: config.ackWrite === 'inbox',
    ...base,
  });
  const mover = config.ackWrite === 'inbox' ? startMoverHost(config, { ...deps, client: queueProducer.client }) : null;
  const closing = (producer: Producer) => async () => {
    await Promise.all([mover?.stop(), producer.close()]);
  };
  if (config.spool.maxBytes === 0) {
    const producer = queueProducer;
    return { producer, queueProducer, spooling: null, recovery: null, mover, close: closing(producer) };
  }
  let opened: Awaited<ReturnType<typeof Spool.open>>;
  try {
    opened = await Spool.open({ dir: config.spool.dir, maxBytes: config.spool.maxBytes, logger: deps.logger });
  } catch (err) {
    await Promise.all([mover?.stop(), queueProducer.close()]);
    throw err;
  }
  // The drain's own connection: its large batches must not hold up the live deliveries' writes.
  const drainQueue = openDrainProducer(config, deps.logger, { ...overrides, onReady: undefined });
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
  return { producer: spooling, queueProducer, spooling, recovery: opened.recovery, mover, close: closing(spooling) };
}

/**
 * The producer a spool drains with (the listener's drain, `spool drain`): its own connection (`role` drain), whose
 * command deadline lets a batch of the largest entries be confirmed, and folded duplicates rerun their record like
 * the listener's own writes.
 */
export function openDrainProducer(
  config: Config,
  logger: Logger,
  overrides: Partial<BullmqProducerOptions> = {},
): BullmqProducer {
  const base = { ...producerOptionsFrom(config), ...overrides };
  return new BullmqProducer({
    onDuplicate: rerunFoldedRecords(config, logger, base),
    ...base,
    role: 'drain',
    commandTimeoutMs: drainCommandTimeoutMs(base.timeoutMs),
  });
}

/**
 * The producer the inbox mover writes jobs with (src/listener/mover-thread.ts): BullMQ jobs, its own connection (`role`
 * mover), folded duplicates rerun their record. No WAIT: the inbox write was confirmed already, and the mover removes
 * an entry only after its job is written, on the same master (a replica that has the removal has the job).
 */
export function openMoverProducer(config: Config, logger: Logger): BullmqProducer {
  const base = { ...producerOptionsFrom(config), waitAof: false, waitReplicas: 0 };
  let lastError = '';
  return new BullmqProducer({
    onDuplicate: rerunFoldedRecords(config, logger, base),
    ...base,
    role: 'mover',
    onError: (err) => {
      // Once per cause: ioredis's retries differ only by their delay ("Retrying from scratch after 400ms").
      const cause = err.message.replace(/\d+/g, 'N');
      if (cause === lastError) return;
      lastError = cause;
      logger.warn({ err: err.message }, 'inbox mover: redis unavailable');
    },
  });
}

/**
 * The `onDuplicate` of a producer that writes deliveries: a folded delivery of a tracked record makes its record run
 * again (`RecordReruns`), on the queue the producer writes to (`options`, overrides included).
 */
function rerunFoldedRecords(
  config: Config,
  logger: Logger,
  options: BullmqProducerOptions,
): NonNullable<BullmqProducerOptions['onDuplicate']> {
  let reruns: RecordReruns | null = null;
  return async (job: WebhookJob, client: RedisClient) => {
    if (recordKeyOf(job.data) === null || !signedForWorker(config, job.data)) return;
    reruns ??= new RecordReruns(client, options);
    if (await reruns.folded(job)) {
      logger.info({ deliveryId: job.data.deliveryId, event: job.name }, 'duplicate delivery: its record runs again');
    }
  };
}

/**
 * A folded delivery runs its record again without passing the delivery stage, where `SIGNATURE_CHECK=worker` checks
 * signatures: an `unchecked` one is checked here instead (its bytes match an earlier delivery's, its header may not).
 * Duplicates are rare: this costs nothing on the path of new deliveries.
 */
function signedForWorker(config: Config, data: WebhookJobData): boolean {
  return deferredRefusal(config, data) === null;
}
