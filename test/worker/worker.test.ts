import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/logger.ts';
import { startWorker } from '../../src/worker/worker.ts';
import { LogCapture, post, startTestListener, untilReady } from '../helpers/listener.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';

let redis: RedisServer | undefined;
after(async () => {
  await redis?.destroy();
});

test('the worker takes a delivered job, logs it with the delivery keys and completes it', async () => {
  redis = await startRedis();
  const listener = await startTestListener(redis.url);
  await untilReady(listener);
  const capture = new LogCapture();
  const config = loadConfig({ REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName, LOG_LEVEL: 'info' });
  const worker = startWorker(config, createLogger('info', capture));
  try {
    const res = await post(listener.url, '{"relatedtype":"invoice","event":"step","relatedid":"42","corpid":"929"}', {
      'content-type': 'application/json',
    });
    const jobId = res.body.jobId as string;
    const deadline = Date.now() + 10_000;
    while ((await listener.queue.getJobState(jobId)) !== 'completed') {
      assert.ok(Date.now() < deadline, 'the job completed within 10 s');
      await new Promise((r) => setTimeout(r, 25));
    }
    const line = capture.lines.find((l) => l.jobId === jobId);
    assert.ok(line, 'a log line names the job');
    assert.equal(line.msg, 'job processed');
    assert.equal(line.event, 'invoice.step');
    assert.equal(line.account, '929');
    assert.equal(line.relatedId, '42');
    assert.equal(line.outcome, 'completed');
    assert.equal(line.attempt, 1);
  } finally {
    await worker.close();
    await listener.close();
  }
});
