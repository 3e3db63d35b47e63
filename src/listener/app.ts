/**
 * The listener as a Fastify app, built from its dependencies. Only `src/cli` listens on a port and handles signals;
 * tests build the app in-process.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { adminRoutes } from '../dashboard/dashboard.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { metricsRoute } from '../metrics/server.ts';
import type { Producer } from '../queue/writer.ts';
import type { Spool } from '../spool/spool.ts';
import { webhookRoutes } from './webhook.ts';

export interface AppDeps {
  config: Config;
  producer: Producer;
  /** The local spool behind the producer (readiness, metrics); absent with `SPOOL_MAX_BYTES=0`. */
  spool?: Pick<Spool, 'status'> | null;
  metrics: Metrics;
  logger: Logger;
  /** Where the dashboard reads DESTINATIONS_FILE's secret variables again; default: the process's environment. */
  env?: NodeJS.ProcessEnv;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, producer, metrics } = deps;
  const app = Fastify({
    // No per-request child logger: the webhook route writes one line per delivery itself, with its fields, and the
    // error handlers log with the app's logger.
    logger: false,
    trustProxy: config.trustProxy,
    // Bounded: a client that sends nothing, or too slowly, does not hold a socket for ever.
    requestTimeout: 30_000,
    return503OnClosing: true,
  });

  // On close, Fastify waits for every open connection, and an idle keep-alive socket would hold it for the whole
  // keep-alive timeout. While closing, sockets are closed as soon as their in-flight request is answered.
  app.addHook('preClose', (done) => {
    const timer = setInterval(() => app.server.closeIdleConnections(), 25);
    app.server.once('close', () => clearInterval(timer));
    done();
  });

  await app.register(webhookRoutes, { config, producer, spooled: deps.spool != null, metrics, logger: deps.logger });

  if (config.admin) await app.register(adminRoutes, { config, logger: deps.logger, env: deps.env ?? process.env });

  app.get('/healthz', async () => ({ ok: true }));

  // Ready while a delivery can be made durable: Redis answers, or the spool can take it. The answer holds states and
  // figures only: whoever can reach the port (a load balancer, the internet when it is published) reads it, and error
  // texts carry internal addresses and paths. Those go to the log, once each time they change, not once per probe.
  const readyLog = deps.logger.child({ component: 'readyz' });
  let reported = '';
  app.get('/readyz', async (_request, reply) => {
    const redis = producer.health();
    const ping = redis.ready ? await producer.ping() : false;
    const spool = deps.spool?.status() ?? null;
    const ready = (redis.ready && ping) || spool?.healthy === true;
    const details = {
      ready,
      redis: { status: redis.status, ping, lastError: redis.lastError },
      spool: spool && { healthy: spool.healthy, lastError: spool.lastError },
    };
    // Without the connection status, which cycles while ioredis reconnects.
    const key = JSON.stringify([ready, ping, redis.lastError, spool?.healthy, spool?.lastError]);
    if (key !== reported) {
      reported = key;
      if (ready && (redis.lastError ?? spool?.lastError ?? null) === null) readyLog.info(details, 'readiness: ready');
      else readyLog.warn(details, ready ? 'readiness: ready, with errors' : 'readiness: NOT ready');
    }
    return reply.code(ready ? 200 : 503).send({
      ok: ready,
      redis: { status: redis.status, ready: redis.ready, ping },
      spool: spool && {
        healthy: spool.healthy,
        depth: spool.depth,
        bytes: spool.bytes,
        maxBytes: spool.maxBytes,
        segments: spool.segments,
        oldestReceivedAt: spool.oldestReceivedAt,
        oldestAgeSeconds: spool.oldestAgeSeconds,
      },
    });
  });

  const refresh = () => {
    metrics.redisUp.set(producer.health().ready ? 1 : 0);
    const spool = deps.spool?.status();
    if (spool) {
      metrics.spoolDepth.set(spool.depth);
      metrics.spoolBytes.set(spool.bytes);
      metrics.spoolOldestAge.set(spool.oldestAgeSeconds);
      metrics.spoolMaxBytes.set(spool.maxBytes);
      metrics.spoolQuarantined.set(spool.quarantined);
    }
  };
  metrics.beforeScrape.push(refresh);
  app.addHook('onClose', async () => {
    metrics.beforeScrape.splice(metrics.beforeScrape.indexOf(refresh), 1);
  });
  // With METRICS_PORT, /metrics is served there instead (src/metrics/server.ts), not beside the webhook.
  if (config.metricsPort === null) metricsRoute(app, metrics);

  return app;
}
