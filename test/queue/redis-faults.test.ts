/**
 * The listener without a spool (SPOOL_MAX_BYTES=0) with Redis down, frozen or restarted: it starts, answers within a
 * bounded time with the configured status, logs what it could not queue, and recovers by itself. (With the spool,
 * the default, see test/spool/.)
 */

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import type { BullmqProducerOptions } from '../../src/queue/producer-options.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { assertRedisServerAvailable, freePort, RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

const JSON_TYPE = { 'content-type': 'application/json' };
const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

async function listener(
  redisUrl: string,
  env: Record<string, string> = {},
  producerOptions: Partial<BullmqProducerOptions> = {},
): Promise<TestListener> {
  const l = await startTestListener(redisUrl, { SPOOL_MAX_BYTES: '0', ...env }, producerOptions);
  cleanup.push(() => l.close());
  return l;
}

test('with Redis down from the start, the listener starts, answers 200 at once and logs the full delivery', async () => {
  const port = await freePort();
  const l = await listener(`redis://127.0.0.1:${port}`);
  const body = '{"relatedtype":"invoice","event":"created","relatedid":"1","corpid":"9"}';
  const res = await post(l.url, body, JSON_TYPE);
  assert.equal(res.status, 200);
  assert.deepEqual([res.body.ok, res.body.queued], [true, false]);
  assert.ok(res.ms < 500, `answered in ${res.ms.toFixed(1)} ms`);
  const errorLine = l.logs.find((line) => line.msg === 'delivery not queued');
  assert.ok(errorLine, 'an error line was written');
  assert.equal(errorLine.level, 50);
  assert.equal((errorLine.job as { data: { rawBody: string } }).data.rawBody, body);
  assert.equal(errorLine.outcome, 'lost');
  const ready = await fetch(`${l.url}/readyz`);
  assert.equal(ready.status, 503);
  const counter = await l.metrics.deliveries.get();
  assert.equal(counter.values.find((v) => v.labels.outcome === 'lost')?.value, 1);
});

test('ENQUEUE_FAILURE_STATUS=503 answers 503 with Retry-After when Redis is down', async () => {
  const port = await freePort();
  const l = await listener(`redis://127.0.0.1:${port}`, { ENQUEUE_FAILURE_STATUS: '503' });
  const started = performance.now();
  const response = await fetch(`${l.url}/webhook/sellsy`, { method: 'POST', body: '{}', headers: JSON_TYPE });
  assert.equal(response.status, 503);
  assert.equal(response.headers.get('retry-after'), '5');
  assert.deepEqual(await response.json(), {
    ok: false,
    error: 'enqueue_failed',
    message: 'the event could not be written to the queue; retry later',
  });
  assert.ok(performance.now() - started < 500);
});

test('a listener started before Redis begins queueing as soon as Redis is up', async () => {
  assertRedisServerAvailable();
  const port = await freePort();
  const l = await listener(`redis://127.0.0.1:${port}`);
  const down = await post(l.url, '{}', JSON_TYPE);
  assert.equal(down.body.queued, false);
  const redis = new RedisServer(port, ['--appendonly', 'yes']);
  cleanup.push(() => redis.destroy());
  await redis.start();
  await untilReady(l);
  const up = await post(l.url, '{"relatedtype":"a","event":"b"}', JSON_TYPE);
  assert.equal(up.status, 200);
  assert.ok(await l.queue.getJob(up.body.jobId as string));
  assert.equal((await fetch(`${l.url}/readyz`)).status, 200);
});

test('with Redis frozen (SIGSTOP), requests are answered after ENQUEUE_TIMEOUT_MS instead of hanging', async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const l = await listener(redis.url, { ENQUEUE_TIMEOUT_MS: '300', ENQUEUE_FAILURE_STATUS: '503' });
  await untilReady(l);
  redis.freeze();
  try {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        post(l.url, `{"relatedtype":"a","event":"b","relatedid":"${i}"}`, JSON_TYPE),
      ),
    );
    for (const r of results) {
      assert.equal(r.status, 503);
      assert.ok(r.ms < 1500, `answered in ${r.ms.toFixed(0)} ms`);
    }
    const timeouts = await l.metrics.enqueueErrors.get();
    assert.equal(timeouts.values.find((v) => v.labels.reason === 'timeout')?.value, 20);
  } finally {
    redis.thaw();
  }
  const after = await post(l.url, '{"relatedtype":"a","event":"after-thaw"}', JSON_TYPE);
  assert.equal(after.status, 200);
  assert.ok(await l.queue.getJob(after.body.jobId as string));
});

test('after Redis is killed (kill -9) and restarted on the same port, the listener recovers by itself', async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const l = await listener(redis.url);
  await untilReady(l);
  const before = await post(l.url, '{"relatedtype":"a","event":"before"}', JSON_TYPE);
  assert.ok(await l.queue.getJob(before.body.jobId as string));
  await redis.kill();
  const during = await post(l.url, '{"relatedtype":"a","event":"during"}', JSON_TYPE);
  assert.equal(during.status, 200);
  assert.equal(during.body.queued, false);
  assert.ok(during.ms < 1500);
  await redis.start();
  await untilReady(l);
  const afterRestart = await post(l.url, '{"relatedtype":"a","event":"after"}', JSON_TYPE);
  assert.equal(afterRestart.body.duplicate, false);
  assert.ok(await l.queue.getJob(afterRestart.body.jobId as string));
  // AOF on: the job accepted before the crash is still there.
  assert.ok(await l.queue.getJob(before.body.jobId as string));
});

test('with Redis frozen, commands waiting for Redis are capped: past the cap deliveries fail at once', async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const l = await listener(
    redis.url,
    { ENQUEUE_TIMEOUT_MS: '200', ENQUEUE_FAILURE_STATUS: '503' },
    { maxPendingCommands: 10 },
  );
  await untilReady(l);
  redis.freeze();
  try {
    const first = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        post(l.url, `{"relatedtype":"a","event":"b","relatedid":"${i}"}`, JSON_TYPE),
      ),
    );
    for (const r of first) assert.equal(r.status, 503);
    const past = await post(l.url, '{"relatedtype":"a","event":"b","relatedid":"past"}', JSON_TYPE);
    assert.equal(past.status, 503);
    assert.ok(past.ms < 100, `refused at once (${past.ms.toFixed(0)} ms)`);
    const errors = await l.metrics.enqueueErrors.get();
    assert.equal(errors.values.find((v) => v.labels.reason === 'backlog')?.value, 1);
  } finally {
    redis.thaw();
  }
  // The stuck connection was dropped; once Redis answers, the producer reconnects and queues again.
  await untilReady(l);
  const after = await post(l.url, '{"relatedtype":"a","event":"after"}', JSON_TYPE);
  assert.equal(after.status, 200);
});

test('regression: a queue whose start-up failed on an open connection is retried until it works', async () => {
  // A user that may not run INFO: BullMQ's start-up check fails while the connection itself stays open, so no new
  // `ready` event will ever come. Granting INFO later must be enough for the listener to start queueing.
  const redis = await startRedis(['--user', 'limited', 'on', 'nopass', '~*', '&*', '+@all', '-info']);
  cleanup.push(() => redis.destroy());
  const l = await listener(`redis://limited@127.0.0.1:${redis.port}`);
  await waitFor(() => l.queueProducer.health().lastError !== null, 10_000, 'the queue start-up to fail');
  assert.equal(l.queueProducer.health().ready, false);
  assert.equal(l.queueProducer.client.status, 'ready');
  const refused = await post(l.url, '{"relatedtype":"a","event":"before-grant"}', JSON_TYPE);
  assert.equal(refused.body.queued, false);
  const admin = redis.client();
  try {
    await admin.call('ACL', 'SETUSER', 'limited', '+info');
  } finally {
    admin.disconnect();
  }
  await untilReady(l);
  const res = await post(l.url, '{"relatedtype":"a","event":"after-grant"}', JSON_TYPE);
  assert.equal(res.status, 200);
  // (The test's own inspection queue used the limited user too, and hit the same BullMQ start-up failure.)
  const inspect = new Queue(l.config.queueName, { connection: { url: redis.url } });
  try {
    assert.equal((await inspect.getJob(res.body.jobId as string))?.name, 'a.after-grant');
  } finally {
    await inspect.close();
  }
});
