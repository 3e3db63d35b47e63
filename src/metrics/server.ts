/**
 * `METRICS_PORT`: `GET /metrics` on a port of its own, so that it is not exposed with the webhook (and so that a
 * `work`-only process has one).
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Metrics } from './metrics.ts';

/** `GET /metrics` on `app`: the Prometheus exposition of `metrics`. Beside the webhook, or on METRICS_PORT. */
export function metricsRoute(app: FastifyInstance, metrics: Metrics): void {
  app.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.scrape()));
}

export async function startMetricsServer(metrics: Metrics, host: string, port: number): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  metricsRoute(app, metrics);
  await app.listen({ host, port });
  return app;
}
