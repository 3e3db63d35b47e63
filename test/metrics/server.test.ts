/**
 * METRICS_PORT: /metrics served on a port of its own, by a worker as by a listener (the real CLI), with the process's
 * probes: /healthz, and a worker's /readyz following its Redis.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { httpOk, spawnCli } from '../helpers/cli.ts';
import { freePort, type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.destroy();
});

const env = () => ({ REDIS_URL: redis.url, QUEUE_NAME: 'metrics-port', HOST: '127.0.0.1', LOG_LEVEL: 'warn' });

test('METRICS_PORT: a work-only process serves its metrics there', async () => {
  const metricsPort = await freePort();
  const work = spawnCli(['work'], { ...env(), METRICS_PORT: String(metricsPort) });
  try {
    await waitFor(() => httpOk(`http://127.0.0.1:${metricsPort}/metrics`), 20_000, 'the worker serves metrics');
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    assert.match(text, /^sellsy_webhooks_jobs_total\{queue="ingest",outcome="completed"\} 0$/m);
    assert.match(text, /^sellsy_webhooks_queue_jobs\{queue="ingest",state="waiting"\} \d+$/m);
    // Nothing in a worker sets the listener's figures: exported, redis_up would stay 0 and raise the alert.
    assert.doesNotMatch(text, /^sellsy_webhooks_(redis_up|deliveries_total|spool_)/m);
  } finally {
    work.child.kill('SIGTERM');
    assert.equal(await work.exited, 0);
  }
});

test('METRICS_PORT: the webhook port of a listener has no /metrics, the metrics port has them', async () => {
  const port = await freePort();
  const metricsPort = await freePort();
  const listen = spawnCli(['listen'], { ...env(), PORT: String(port), METRICS_PORT: String(metricsPort) });
  try {
    await waitFor(() => httpOk(`http://127.0.0.1:${port}/healthz`), 20_000, 'the listener is up');
    assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 404);
    // No worker here: the listener's readiness is on its own port, the metrics port has liveness only.
    assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status, 404);
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    assert.match(text, /^sellsy_webhooks_deliveries_total\{outcome="accepted"\} 0$/m);
    assert.match(text, /^sellsy_webhooks_redis_up 1$/m);
  } finally {
    listen.child.kill('SIGTERM');
    assert.equal(await listen.exited, 0);
  }
});

test('METRICS_PORT: a work-only process answers /readyz 200 while its Redis is up, 503 while it is down, 200 again once it is back', async (t) => {
  // A Redis of its own: this test stops and restarts it.
  const own = await startRedis();
  t.after(() => own.destroy());
  const metricsPort = await freePort();
  const work = spawnCli(['work'], {
    ...env(),
    REDIS_URL: own.url,
    QUEUE_NAME: 'worker-probes',
    METRICS_PORT: String(metricsPort),
  });
  const probe = async (path: string) => {
    const response = await fetch(`http://127.0.0.1:${metricsPort}${path}`);
    return { status: response.status, body: (await response.json()) as unknown };
  };
  const readyzIs = (status: number) => async () => {
    try {
      return (await probe('/readyz')).status === status;
    } catch {
      return false; // not listening yet
    }
  };
  try {
    await waitFor(readyzIs(200), 20_000, 'the worker is ready');
    assert.deepEqual(await probe('/readyz'), { status: 200, body: { ok: true, redis: { ready: true } } });
    assert.deepEqual(await probe('/healthz'), { status: 200, body: { ok: true } });

    await own.kill();
    await waitFor(readyzIs(503), 10_000, 'the worker is not ready once Redis is gone');
    assert.deepEqual(await probe('/readyz'), { status: 503, body: { ok: false, redis: { ready: false } } });
    assert.deepEqual(await probe('/healthz'), { status: 200, body: { ok: true } }, 'alive all the same');

    await own.start();
    await waitFor(readyzIs(200), 20_000, 'the worker is ready again once Redis is back');
  } finally {
    work.child.kill('SIGTERM');
    assert.equal(await work.exited, 0);
  }
});
