/**
 * The inbox mover's thread (`ACK_WRITE=inbox`): started by src/listener/mover-host.ts with the listener's
 * configuration, it runs an `InboxMover` (src/queue/mover.ts) on connections of its own, and reports each batch moved
 * and each change of lease to the listener thread, which keeps the metrics.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Config } from '../config/config.ts';
import { createLogger } from '../logger.ts';
import { createConnection } from '../queue/connection.ts';
import { inboxKeys } from '../queue/inbox.ts';
import { InboxMover, type MoverMessage } from '../queue/mover.ts';
import { openMoverProducer } from './open-producer.ts';

const { config, acknowledging } = workerData as { config: Config; acknowledging: SharedArrayBuffer };
const port = parentPort;
if (port === null) throw new Error('src/listener/mover-thread.ts runs as a worker thread');
const post = (message: MoverMessage) => port.postMessage(message);

const logger = createLogger(config.logLevel).child({ component: 'mover' });
/**
 * The listener is busy, and the mover yields, from this many deliveries being acknowledged at once: a burst (dozens
 * of requests waiting for their write), not a steady flow (a few at a time at 2,000 req/s).
 */
const BUSY_AT = 8;
/** Deliveries the listener thread is acknowledging now (src/listener/mover-host.ts). */
const inFlight = new Int32Array(acknowledging);

const producer = openMoverProducer(config, logger);
const waiter = createConnection(config.redis, { role: 'worker', name: `${config.queueName}:mover-wait` });
waiter.on('error', () => undefined);
const mover = new InboxMover({
  keys: inboxKeys(config.queuePrefix, config.queueName),
  producer,
  waiter,
  logger,
  busy: () => Atomics.load(inFlight, 0) >= BUSY_AT,
  onMoved: (report) => post({ type: 'moved', ...report }),
  onLease: (held, token) => post({ type: 'lease', held, token }),
});
mover.start();

port.on('message', (message: { type: 'stop'; drainMs: number }) => {
  if (message.type !== 'stop') return;
  void mover
    .stop(message.drainMs)
    .then(() => producer.close())
    .finally(() => post({ type: 'stopped' }));
});
