/**
 * Large deliveries go to the spool first: Redis cannot confirm them within ACK_BUDGET_MS, and writing them there
 * anyway held their JSON and Redis's command buffers in the listener's memory for nothing. Against a real Redis.
 */

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import { buildApp } from '../../src/listener/app.ts';
import { createLogger } from '../../src/logger.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import type { WebhookJob } from '../../src/queue/contract.ts';
import { largeBodyBytes } from '../../src/spool/spooling-producer.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { allJobs } from '../helpers/load.ts';
import { startRedis } from '../helpers/redis-server.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

const headers = { 'content-type': 'application/json' };

async function listener(env: Record<string, string> = {}): Promise<TestListener> {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  // The production default budget, which sets the threshold (256 KiB).
  const l = await startTestListener(redis.url, { ACK_BUDGET_MS: '10', ...env });
  cleanup.push(() => l.close());
  await untilReady(l);
  return l;
}

/** An invoice event of about `bytes` bytes, non-ASCII text included. */
function invoiceBody(bytes: number, id: string): string {
  const row = { name: 'Article — révision «garantie»', qt: '2.000', notes: 'x'.repeat(60) };
  const rows = Array.from({ length: Math.ceil(bytes / JSON.stringify(row).length) }, () => row);
  return JSON.stringify({
    eventType: 'docslog',
    event: 'step',
    relatedtype: 'invoice',
    relatedid: id,
    corpid: '929',
    timestamp: '1767225600',
    relatedobject: { id, thirdname: 'Société «Dupont & Fils»', rows },
  });
}

async function counter(l: TestListener, name: 'deliveries' | 'enqueueErrors' | 'spoolDrained', label: string) {
  const values = (await l.metrics[name].get()).values;
  return values.find((v) => Object.values(v.labels).includes(label))?.value ?? 0;
}

test('a delivery above 256 KiB (at ACK_BUDGET_MS=10) is acknowledged from the spool, counted spooled with reason large, and becomes one job with its exact bytes', async () => {
  const l = await listener();
  assert.equal(largeBodyBytes(l.config.spool.ackBudgetMs), 262_150);
  const body = invoiceBody(300 * 1024, 'large-1');
  assert.ok(Buffer.byteLength(body) > 262_150);
  const answer = await post(l.url, body, headers);
  assert.equal(answer.status, 200);
  assert.equal(answer.body.spooled, true);
  assert.equal(await counter(l, 'deliveries', 'spooled'), 1);
  assert.equal(await counter(l, 'enqueueErrors', 'large'), 0, 'spooled by design: not a failed write');
  const line = l.logs.find((entry) => entry.msg === 'delivery' && entry.deliveryId === answer.body.deliveryId);
  assert.equal(line?.reason, 'large');
  assert.equal(line?.level, 30, 'logged at info: spooling a large delivery is not a Redis failure');

  await l.spooling?.drained(30_000);
  const job = await l.queue.getJob(answer.body.jobId as string);
  assert.equal(job?.name, 'invoice.step');
  assert.equal(job?.data.rawBody, body);
  assert.equal(job?.data.event?.relatedId, 'large-1');
  assert.deepStrictEqual(job?.data.event?.relatedObject, JSON.parse(body).relatedobject);
  assert.equal(job?.data.parseProblem, null);
});

test('the same large delivery sent twice is spooled twice and becomes one job', async () => {
  const l = await listener();
  const body = invoiceBody(300 * 1024, 'large-twice');
  const answers = [await post(l.url, body, headers), await post(l.url, body, headers)];
  assert.deepStrictEqual(
    answers.map((a) => [a.status, a.body.spooled]),
    [
      [200, true],
      [200, true],
    ],
  );
  await l.spooling?.drained(30_000);
  assert.equal((await allJobs(l.queue)).length, 1);
  assert.equal(await counter(l, 'spoolDrained', 'duplicate'), 1);
});

test('a large delivery the spool cannot take (SPOOL_MAX_BYTES below its size) is queued in Redis instead', async () => {
  const l = await listener({ SPOOL_MAX_BYTES: String(64 * 1024) });
  const body = invoiceBody(300 * 1024, 'large-full');
  const answer = await post(l.url, body, headers);
  assert.equal(answer.status, 200);
  assert.equal(answer.body.spooled, undefined);
  assert.equal(answer.body.queued, undefined);
  const job = await l.queue.getJob(answer.body.jobId as string);
  assert.equal(job?.data.rawBody, body);
  assert.equal(await counter(l, 'enqueueErrors', 'large'), 0);
});

test('with the spool off (SPOOL_MAX_BYTES=0) a delivery above 256 KiB is not treated as large: its body fields are built whole for Redis', async () => {
  const config = loadConfig({ SPOOL_MAX_BYTES: '0', ACK_BUDGET_MS: '10', PORT: '0' });
  const seen: WebhookJob[] = [];
  const app = await buildApp({
    config,
    producer: {
      enqueue: async (job) => {
        seen.push(job);
        return { jobId: job.data.deliveryId, duplicate: false };
      },
      health: () => ({ status: 'ready', ready: true, lastError: null }),
      ping: async () => true,
      close: async () => undefined,
    },
    metrics: createMetrics({ processMetrics: false }),
    logger: createLogger('silent'),
  });
  cleanup.push(() => app.close());
  const body = invoiceBody(300 * 1024, 'large-no-spool');
  const answer = await app.inject({ method: 'POST', url: '/webhook/sellsy', headers, payload: body });
  assert.equal(answer.statusCode, 200);
  const data = seen[0]?.data;
  assert.ok(data);
  for (const field of ['rawBody', 'event'] as const) {
    assert.equal(Object.getOwnPropertyDescriptor(data, field)?.get, undefined, `${field} is a plain value`);
  }
  assert.equal(data.rawBody, body);
  assert.equal(data.event?.relatedId, 'large-no-spool');
});
