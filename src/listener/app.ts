/**
 * The listener as a Fastify app, built from its dependencies. Only `src/cli` listens on a port and handles signals;
 * tests build the app in-process.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { Producer } from '../queue/producer.ts';
import { webhookRoutes } from './webhook.ts';

export interface AppDeps {
  config: Config;
  producer: Producer;
  metrics: Metrics;
  logger: Logger;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, producer, metrics } = deps;
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // One line per delivery is written by the webhook route itself, with the delivery's fields.
    logController: new LogController({ disableRequestLogging: true }),
    trustProxy: config.trustProxy,
    // Bounded: a client that sends nothing, or too slowly, does not hold a socket for ever.
    requestTimeout: 30_000,
    return503OnClosing: true,
  });

  // On close, Fastify waits for every open connection; keep-alive sockets would hold it for the keep-alive timeout.
  // Once closing, each answer carries `Connection: close`, so sockets end as their in-flight request completes.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });

  await app.register(webhookRoutes, { config, producer, metrics });

  app.get('/healthz', async () => ({ ok: true }));

  app.get('/readyz', async (_request, reply) => {
    const redis = producer.health();
    const ping = redis.ready ? await producer.ping() : false;
    const ready = redis.ready && ping;
    return reply.code(ready ? 200 : 503).send({ ok: ready, redis: { ...redis, ping } });
  });

  app.get('/metrics', async (_request, reply) => {
    metrics.redisUp.set(producer.health().ready ? 1 : 0);
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  return app;
}
