import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { watchQueues } from '../../src/metrics/queue-stats.ts';
import { post, startTestListener, untilReady } from '../helpers/listener.ts';
import { freePort, type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, recordBody } from '../helpers/worker.ts';

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.destroy();
});

test('queue figures: jobs by state, the oldest waiting age and dead letters', async () => {
  const listener = await startTestListener(redis.url);
  await untilReady(listener);
  const metrics = createMetrics({ processMetrics: false });
  // The figures are read on a clock 1.1 s ahead: the jobs are as old as if the test had waited that long.
  const stats = watchQueues(metrics, listener.config, () => Date.now() + 1100);
  try {
    for (let i = 0; i < 3; i++) await post(listener.url, recordBody(String(i), i), json);
    const text = await metrics.scrape();
    assert.match(text, /^sellsy_webhooks_queue_jobs\{queue="ingest",state="waiting"\} 3$/m);
    assert.match(text, /^sellsy_webhooks_queue_jobs\{queue="records",state="waiting"\} 0$/m);
    assert.match(text, /^sellsy_webhooks_dead_letters\{queue="ingest"\} 0$/m);
    const age = Number(/^sellsy_webhooks_queue_oldest_waiting_age_seconds\{queue="ingest"\} (\S+)$/m.exec(text)?.[1]);
    assert.ok(age >= 1 && age < 30, `the oldest waiting job is about 1 s old (${age})`);
    assert.match(text, /^sellsy_webhooks_queue_stats_up 1$/m);
  } finally {
    await stats.close();
    await listener.close();
  }
});

test('a scrape with Redis frozen answers at once, without the queue figures of before', async () => {
  const metrics = createMetrics({ processMetrics: false });
  const stats = watchQueues(metrics, loadConfig({ REDIS_URL: redis.url, QUEUE_NAME: 'frozen-scrape' }));
  try {
    const up = async () => /^sellsy_webhooks_queue_stats_up 1$/m.test(await metrics.scrape());
    await waitFor(up, 10_000, 'a scrape with the queue figures');
    redis.freeze();
    const started = Date.now();
    const down = await metrics.scrape();
    redis.thaw();
    assert.ok(Date.now() - started < 5000, 'a scrape does not wait for a frozen Redis');
    assert.match(down, /^sellsy_webhooks_queue_stats_up 0$/m);
    assert.doesNotMatch(down, /^sellsy_webhooks_queue_jobs\{/m, 'no stale counts');
  } finally {
    redis.thaw();
    await stats.close();
  }
});

test('a scrape while Redis has been unreachable since the start answers at once, without queue figures', async () => {
  const metrics = createMetrics({ processMetrics: false });
  const config = loadConfig({ REDIS_URL: `redis://127.0.0.1:${await freePort()}` });
  const stats = watchQueues(metrics, config);
  try {
    const started = Date.now();
    const text = await metrics.scrape();
    assert.ok(Date.now() - started < 3000, `the scrape took ${Date.now() - started} ms`);
    assert.match(text, /^sellsy_webhooks_queue_stats_up 0$/m);
    assert.doesNotMatch(text, /^sellsy_webhooks_queue_jobs\{/m);
  } finally {
    await stats.close();
  }
});
