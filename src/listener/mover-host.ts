/**
 * The listener's side of the inbox mover (`ACK_WRITE=inbox`): starts src/listener/mover-thread.ts in a worker thread,
 * so that BullMQ's job creation runs beside the event loop that answers Sellsy, not on it; keeps its metrics; starts it
 * again if it dies; stops it on close (as the lease holder, after moving what is left in the inbox, for up to half of
 * `SHUTDOWN_TIMEOUT_MS`; then the lease is given up).
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { RedisClient } from '../queue/connection.ts';
import { inboxCommands, inboxKeys, inboxStatus } from '../queue/inbox.ts';
import type { MoverMessage } from '../queue/mover.ts';

export interface MoverHost {
  stop(): Promise<void>;
  /** The thread running now; null between an unexpected exit and its restart, and once stopped. */
  readonly thread: Worker | null;
}

const RESTART_DELAY_MS = 1_000;
const STOP_TIMEOUT_MS = 10_000;
/** The longest a `/metrics` scrape waits for the inbox's figures. */
const SCRAPE_WAIT_MS = 250;

/**
 * The thread's entry. Run from the TypeScript sources (tests, `tsx`), a thread does not inherit the parent's module
 * hooks (Node 20): it registers tsx's before loading the entry.
 */
function spawnThread(config: Config): Worker {
  const fromSources = import.meta.url.endsWith('.ts');
  const entry = new URL(fromSources ? './mover-thread.ts' : './mover-thread.js', import.meta.url);
  if (!fromSources) return new Worker(entry, { workerData: { config } });
  const tsx = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(bootstrap, { eval: true, workerData: { config } });
}

/** `client`: a listener connection, for the inbox's depth and age when `/metrics` is scraped. */
export function startMoverHost(
  config: Config,
  deps: { logger: Logger; metrics: Metrics; client: RedisClient },
): MoverHost {
  const { logger, metrics } = deps;
  const log = logger.child({ component: 'mover' });
  const keys = inboxKeys(config.queuePrefix, config.queueName);
  const scrape = async () => {
    // A Redis that does not answer in time leaves the last figures (redis_up says why): a scrape never waits on it.
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), SCRAPE_WAIT_MS);
    });
    const status = await Promise.race([inboxStatus(deps.client, keys).catch(() => null), late]);
    clearTimeout(timer);
    if (status === null) return;
    metrics.inboxDepth.set(status.depth);
    metrics.inboxOldestAge.set(status.oldestAgeSeconds);
  };
  metrics.beforeScrape.push(scrape);

  let stopping = false;
  let stopped: (() => void) | null = null;
  /** The lease token of the thread while it holds the lease. */
  let heldBy: string | null = null;
  const onMessage = (message: MoverMessage) => {
    if (message.type === 'moved') {
      metrics.inboxMoved.inc({ result: 'queued' }, message.queued);
      metrics.inboxMoved.inc({ result: 'duplicate' }, message.duplicate);
      for (const ms of message.lagsMs) metrics.moveLag.observe(ms / 1000);
    } else if (message.type === 'lease') {
      heldBy = message.held ? message.token : null;
      log.info(message.held ? 'inbox mover: moving inbox entries into jobs' : 'inbox mover: standing by');
    } else stopped?.();
  };
  /** Null between a thread's unexpected exit and its restart. */
  let running: Worker | null = null;
  const start = () => {
    const thread = spawnThread(config);
    running = thread;
    thread.on('message', onMessage);
    thread.on('error', (err) => log.error({ err }, 'inbox mover thread failed'));
    thread.on('exit', (code) => {
      if (running === thread) running = null;
      if (stopping) return;
      // A dead thread's lease would keep every mover, its successor included, away for the rest of its term.
      const token = heldBy;
      heldBy = null;
      if (token !== null)
        inboxCommands(deps.client)
          .inboxRelease(keys.lease, token)
          .catch(() => undefined);
      // The inbox keeps the entries: a new thread moves them (another listener's mover meanwhile, if any).
      log.error({ code }, `inbox mover thread stopped; starting it again in ${RESTART_DELAY_MS} ms`);
      setTimeout(() => {
        if (!stopping) start();
      }, RESTART_DELAY_MS).unref();
    });
  };
  start();

  return {
    get thread() {
      return running;
    },
    async stop() {
      stopping = true;
      metrics.beforeScrape.splice(metrics.beforeScrape.indexOf(scrape), 1);
      // Stopped while dead (waiting for its restart): nothing to stop.
      const thread = running;
      if (thread === null) return;
      const done = new Promise<void>((resolve) => {
        stopped = resolve;
        thread.once('exit', () => resolve());
      });
      // The lease holder first moves what is left in the inbox, for up to half the shutdown time.
      const drainMs = config.shutdownTimeoutMs / 2;
      thread.postMessage({ type: 'stop', drainMs });
      const timer = setTimeout(() => void thread.terminate(), drainMs + STOP_TIMEOUT_MS);
      await done;
      clearTimeout(timer);
      await thread.terminate();
    },
  };
}
