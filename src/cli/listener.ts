/**
 * Starts the listener on its port with a real producer; returns a closer that drains it.
 */
import type { Logger } from 'pino';
import { type Config, signatureEnabled } from '../config/config.ts';
import { buildApp } from '../listener/app.ts';
import { openListenerProducer } from '../listener/open-producer.ts';
import { createMetrics, type Metrics } from '../metrics/metrics.ts';

export interface RunningListener {
  url: string;
  close(): Promise<void>;
}

export async function startListener(
  config: Config,
  logger: Logger,
  metrics: Metrics = createMetrics(),
): Promise<RunningListener> {
  const log = logger.child({ component: 'listener' });
  if (!signatureEnabled(config)) {
    log.warn(
      'SELLSY_SIGN_KEY is not set: webhook signatures are NOT verified; anyone who knows the URL can post events',
    );
  } else if (config.signature.check === 'worker') {
    log.warn('SIGNATURE_CHECK=worker: signatures are carried in each job as "unchecked"; consumers must verify them');
  }
  let lastRedisError = '';
  let lastRedisErrorAt = 0;
  const opened = await openListenerProducer(
    config,
    { logger: log, metrics },
    {
      onReady: (report) => {
        lastRedisError = '';
        const redis = report.settings;
        log.info({ redis }, `redis connected: ${report.guarantee}`);
        // Even a setting that loses jobs is a warning here: the listener runs on (doctor fails it).
        for (const { code, warning } of report.findings) {
          if (warning !== undefined) log.warn({ redis, code }, warning);
        }
      },
      onError: (err) => {
        // ioredis reports every failed reconnection; one line per distinct error per 30 s is enough.
        const now = Date.now();
        if (err.message !== lastRedisError || now - lastRedisErrorAt > 30_000) {
          log.warn({ err: err.message }, 'redis unavailable: deliveries cannot be queued until it is back');
          lastRedisError = err.message;
          lastRedisErrorAt = now;
        }
      },
    },
  );
  const { producer, spooling, recovery } = opened;
  if (recovery === null) {
    log.warn(
      'SPOOL_MAX_BYTES=0: no local spool; when Redis cannot take a delivery it is answered with ENQUEUE_FAILURE_STATUS and logged, not kept',
    );
  } else {
    const spool = { dir: config.spool.dir, ackBudgetMs: config.spool.ackBudgetMs, ...recovery };
    if (recovery.corruptBytes > 0 || recovery.badFiles.length > 0) {
      log.error({ spool }, 'the spool held damaged records; they are skipped and their segments kept as *.corrupt');
    }
    if (recovery.tornBytes > 0)
      log.warn({ spool }, 'the spool ended with a torn record (a crash while writing); cut off');
    log.info({ spool }, recovery.depth > 0 ? 'spool opened: draining what an earlier run left' : 'spool opened');
  }
  const app = await buildApp({ config, producer, spool: spooling?.spool, metrics, logger: log });
  const address = await app.listen({ port: config.port, host: config.host });
  log.info({ address, queue: config.queueName, prefix: config.queuePrefix }, 'listening');
  return {
    url: address,
    async close() {
      // Stops accepting, lets in-flight requests (and their enqueues) finish, then closes Redis.
      await app.close();
      await opened.close();
    },
  };
}
