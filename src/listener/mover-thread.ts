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
import { InboxMover } from '../queue/mover.ts';
import { openMoverProducer } from './open-producer.ts';

export type MoverMessage =
  | { type: 'moved'; queued: number; duplicate: number; lagsMs: number[] }
  | { type: 'lease'; held: boolean }
  | { type: 'stopped' };

const { config } = workerData as { config: Config };
const port = parentPort;
if (port === null) throw new Error('src/listener/mover-thread.ts runs as a worker thread');
const post = (message: MoverMessage) => port.postMessage(message);

const logger = createLogger(config.logLevel).child({ component: 'mover' });
const producer = openMoverProducer(config, logger);
const waiter = createConnection(config.redis, { role: 'worker', name: `${config.queueName}:mover-wait` });
waiter.on('error', () => undefined);
const mover = new InboxMover({
  keys: inboxKeys(config.queuePrefix, config.queueName),
  producer,
  waiter,
  logger,
  onMoved: (report) => post({ type: 'moved', ...report }),
  onLease: (held) => post({ type: 'lease', held }),
});
mover.start();

port.on('message', (message: { type: 'stop'; drainMs: number }) => {
  if (message.type !== 'stop') return;
  void mover
    .stop(message.drainMs)
    .then(() => producer.close())
    .finally(() => post({ type: 'stopped' }));
});
