/**
 * `METRICS_PORT`: `GET /metrics` on a port of its own, so that it is not exposed with the webhook (and so that a
 * `work`-only process has one), with the process's probes beside it: `GET /healthz` (the process runs) and, when the
 * process runs a worker, `GET /readyz` (the worker's Redis connections are ready). They are a `work` process's only
 * probes, since it has no other port.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Metrics } from './metrics.ts';

/** `GET /metrics` on `app`: the Prometheus exposition of `metrics`. Beside the webhook, or on METRICS_PORT. */
export function metricsRoute(app: FastifyInstance, metrics: Metrics): void {
  app.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.scrape()));
}

export interface MetricsServerProbes {
  /**
   * The worker's readiness: its Redis connections are ready. Given, `GET /readyz` answers `200` while it is true and
   * `503` otherwise; absent (a process without a worker), there is no `/readyz` on this port.
   */
  workerReady?: () => boolean;
}

export async function startMetricsServer(
  metrics: Metrics,
  host: string,
  port: number,
  probes: MetricsServerProbes = {},
): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  metricsRoute(app, metrics);
  app.get('/healthz', async () => ({ ok: true }));
  const { workerReady } = probes;
  if (workerReady) {
    // The listener's /readyz shape, states only: the errors behind a change are in the worker's log.
    app.get('/readyz', async (_request, reply) => {
      const ready = workerReady();
      return reply.code(ready ? 200 : 503).send({ ok: ready, redis: { ready } });
    });
  }
  await app.listen({ host, port });
  return app;
}
