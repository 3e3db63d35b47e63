import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PermanentError, RetryLaterError } from '../../src/errors.ts';
import { createMetrics, type Metrics } from '../../src/metrics/metrics.ts';
import { watchQueues } from '../../src/metrics/queue-stats.ts';
import { post, startTestListener, untilReady } from '../helpers/listener.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, recordBody, startTestWorker } from '../helpers/worker.ts';

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.destroy();
});

/** `name{labels} value` lines of a scrape, as a map. */
async function scrape(metrics: Metrics): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of (await metrics.scrape()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

test('worker metrics after a known sequence: completed, retried, rate limited, dead letters', async () => {
  const listener = await startTestListener(redis.url, { JOB_ATTEMPTS: '3', JOB_BACKOFF_MS: '10' });
  await untilReady(listener);
  const metrics = createMetrics({ processMetrics: false });
  const { registry } = metrics;
  const stats = watchQueues(metrics, listener.config);
  const runs = new Map<string, number>();
  const worker = await startTestWorker(
    listener,
    {},
    {
      '*': async (event) => {
        const id = event?.relatedId ?? '';
        const n = (runs.get(id) ?? 0) + 1;
        runs.set(id, n);
        if (id === 'flaky' && n === 1) throw new Error('once');
        if (id === 'busy' && n === 1) throw new RetryLaterError('429', 50);
        if (id === 'refused') throw new PermanentError('400');
      },
    },
    registry,
  );
  try {
    for (const id of ['ok', 'flaky', 'busy', 'refused'])
      assert.equal((await post(listener.url, recordBody(id, 1), json)).status, 200);
    await waitFor(
      async () => {
        const c = await listener.queue.getJobCounts('completed', 'failed');
        return c.completed === 3 && c.failed === 1;
      },
      15_000,
      'three completed, one dead letter',
    );
    await waitFor(
      async () => (await scrape(metrics)).get('sellsy_webhooks_jobs_total{queue="ingest",outcome="completed"}') === 3,
      5000,
      'metrics caught up',
    );
    const m = await scrape(metrics);
    assert.equal(m.get('sellsy_webhooks_jobs_total{queue="ingest",outcome="retry"}'), 1);
    assert.equal(m.get('sellsy_webhooks_jobs_total{queue="ingest",outcome="rate_limited"}'), 1);
    assert.equal(m.get('sellsy_webhooks_jobs_total{queue="ingest",outcome="dead_letter"}'), 1);
    assert.equal(m.get('sellsy_webhooks_dead_letters{queue="ingest"}'), 1);
    assert.equal(m.get('sellsy_webhooks_job_duration_seconds_count{queue="ingest"}'), 6, 'every run is timed');
    assert.equal(m.get('sellsy_webhooks_job_attempts_count{queue="ingest",outcome="completed"}'), 3);
    assert.equal(m.get('sellsy_webhooks_job_attempts_sum{queue="ingest",outcome="completed"}'), 1 + 2 + 1);
    assert.equal(m.get('sellsy_webhooks_job_attempts_sum{queue="ingest",outcome="dead_letter"}'), 1);
  } finally {
    await stats.close();
    await worker.close();
    await listener.close();
  }
});
