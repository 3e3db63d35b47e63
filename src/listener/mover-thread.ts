/**
 * The inbox mover's thread (`ACK_WRITE=inbox`): started by src/listener/mover-host.ts with the listener's
 * configuration, it runs an `InboxMover` (src/queue/mover.ts) on connections of its own, and reports each batch moved
 * and each change of lease to the listener thread, which keeps the metrics.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type { Config } from '../config/config.ts';
import { createLogger } from '../logger.ts';
import { createConnection } from '../queue/connection.ts';
import { inboxKeys } from '../queue/inbox.ts';
import { InboxMover, type MoverMessage } from '../queue/mover.ts';
import { openMoverProducer } from './open-producer.ts';

/** The lowest priority: measured on 2 cores, 9.6k acknowledgements/s during a burst instead of 6.1k at the same. */
const MOVER_NICE = 19;

const { config } = workerData as { config: Config };
const port = parentPort;
if (port === null) throw new Error('src/listener/mover-thread.ts runs as a worker thread');
const post = (message: MoverMessage) => port.postMessage(message);

const logger = createLogger(config.logLevel).child({ component: 'mover' });
lowerPriority(MOVER_NICE);

/**
 * The mover yields the CPU to the thread that answers Sellsy: a burst is acknowledged first and moved right after.
 * Linux: the thread's own id from /proc/thread-self, and setpriority on it (a nice value is per thread there).
 * Elsewhere, or if refused, it runs at the process's priority.
 */
function lowerPriority(nice: number): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isSafeInteger(tid) && tid > 0) setPriority(tid, nice);
  } catch {
    // Not Linux, or not allowed: the same priority as the listener.
  }
}
const producer = openMoverProducer(config, logger);
const waiter = createConnection(config.redis, { role: 'worker', name: `${config.queueName}:mover-wait` });
waiter.on('error', () => undefined);
const mover = new InboxMover({
  keys: inboxKeys(config.queuePrefix, config.queueName),
  producer,
  waiter,
  logger,
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
