/**
 * SIGNATURE_CHECK=worker: what becomes of the jobs the worker refuses for their signature (forgeries, wrong keys):
 * dead letters with the reason, the deduplication key released, kept BAD_SIGNATURE_KEEP_SECONDS only.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { PermanentError } from '../../src/errors.ts';
import type { Handler } from '../../src/handlers/handler.ts';
import { sign } from '../../src/sellsy/signature.ts';
import { RefusedDeadLetters } from '../../src/worker/refused.ts';
import { extend } from '../helpers/length-extension.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { KEY, VECTORS } from '../helpers/vectors.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, recordBody, startTestWorker } from '../helpers/worker.ts';

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.destroy();
});

const FORM_TYPE = { 'content-type': 'application/x-www-form-urlencoded' };

async function pair(env: Record<string, string> = {}, handlers: Record<string, Handler> = { '*': async () => {} }) {
  const common = { SELLSY_SIGN_KEY: KEY, SIGNATURE_CHECK: 'worker', JOB_ATTEMPTS: '3', ...env };
  const listener = await startTestListener(redis.url, common);
  await untilReady(listener);
  const worker = await startTestWorker(listener, common, handlers);
  return {
    listener,
    worker,
    async done() {
      await worker.close();
      await listener.close();
    },
  };
}

async function deliver(listener: TestListener, body: Buffer | string, headers: Record<string, string>) {
  const res = await post(listener.url, body, headers);
  assert.equal(res.status, 200);
  return res.body as { jobId: string; duplicate: boolean };
}

async function settled(listener: TestListener, jobId: string, state: 'completed' | 'failed') {
  await waitFor(async () => (await listener.queue.getJobState(jobId)) === state, 15_000, `job ${jobId} ${state}`);
  const job = await listener.queue.getJob(jobId);
  assert.ok(job);
  return job;
}

test('regression: SIGNATURE_CHECK=worker dead-letters length extensions of the JSON and form vectors as forbidden_bytes', async () => {
  const handled: string[] = [];
  const { listener, done } = await pair({}, { '*': async (_e, ctx) => void handled.push(ctx.deliveryId) });
  try {
    const json1 = extend(VECTORS.json.body, VECTORS.json.signature, KEY.length, '}');
    const other = encodeURIComponent('{"relatedtype":"third","event":"deleted","relatedid":"38484","corpid":"138"}');
    const form = extend(VECTORS.form.body, VECTORS.form.signature, KEY.length, `&notif=${other}`);
    for (const [forged, type] of [
      [json1, json],
      [form, FORM_TYPE],
    ] as const) {
      const { jobId } = await deliver(listener, forged.body, { ...type, 'x-webhook-signature': forged.signature });
      const job = await settled(listener, jobId, 'failed');
      assert.equal(job.attemptsMade, 1, 'failed at once');
      assert.match(job.failedReason, /^signature: forbidden_bytes: /);
    }
    assert.deepEqual(handled, [], 'no handler saw a forgery');
  } finally {
    await done();
  }
});

test('regression: a badly signed job releases its deduplication key, so the genuine delivery of the same bytes makes its own job', async () => {
  const handled: string[] = [];
  const { listener, done } = await pair({}, { '*': async (event) => void handled.push(event?.relatedId ?? '') });
  try {
    const body = recordBody('4242', 1, '929');
    const forged = await deliver(listener, body, { ...json, 'x-webhook-signature': sign('not the key', body) });
    await settled(listener, forged.jobId, 'failed');
    const genuine = await deliver(listener, body, { ...json, 'x-webhook-signature': sign(KEY, body) });
    assert.equal(genuine.duplicate, false, 'not folded into the refused job');
    assert.notEqual(genuine.jobId, forged.jobId);
    await settled(listener, genuine.jobId, 'completed');
    assert.deepEqual(handled, ['4242']);
    // Its own key holds: a second genuine copy is a duplicate of the genuine job.
    const again = await deliver(listener, body, { ...json, 'x-webhook-signature': sign(KEY, body) });
    assert.deepEqual([again.duplicate, again.jobId], [true, genuine.jobId]);
  } finally {
    await done();
  }
});

test('with BAD_SIGNATURE_KEEP_SECONDS=0 a refused job is removed once it failed, while other dead letters stay', async () => {
  const { listener, worker, done } = await pair(
    { BAD_SIGNATURE_KEEP_SECONDS: '0' },
    {
      '*': async () => {
        throw new PermanentError('the target refused it');
      },
    },
  );
  try {
    const genuine = recordBody('1', 1);
    const kept = await deliver(listener, genuine, { ...json, 'x-webhook-signature': sign(KEY, genuine) });
    await settled(listener, kept.jobId, 'failed');
    const bad = recordBody('2', 1);
    const refused = await deliver(listener, bad, { ...json, 'x-webhook-signature': sign('wrong', bad) });
    await waitFor(
      () => worker.logs.some((l) => l.jobId === refused.jobId && l.outcome === 'dead_letter'),
      15_000,
      'the refused job failed',
    );
    await waitFor(async () => (await listener.queue.getJob(refused.jobId)) === undefined, 15_000, 'removed');
    assert.equal(await listener.queue.getJobState(kept.jobId), 'failed', 'the genuine dead letter stays');
  } finally {
    await done();
  }
});

test('a refused job stays a dead letter for BAD_SIGNATURE_KEEP_SECONDS (default one day), then the sweep removes it', async () => {
  const { listener, done } = await pair();
  const client = new Redis(redis.url, { maxRetriesPerRequest: null });
  const queue = new Queue(listener.config.queueName, { connection: client, prefix: listener.config.queuePrefix });
  try {
    const bad = recordBody('3', 1);
    const refusedAt = Date.now();
    const { jobId } = await deliver(listener, bad, { ...json, 'x-webhook-signature': sign('wrong', bad) });
    const job = await settled(listener, jobId, 'failed');
    assert.match(job.failedReason, /^signature: bad_signature: /);
    // The job was added with the 30-day retention of every dead letter; the worker's own list shortens it.
    assert.deepEqual(job.opts.removeOnFail, { age: 30 * 24 * 3600 });
    const sweeper = new RefusedDeadLetters(client, queue, 86_400);
    assert.deepEqual(await sweeper.list(), [jobId]);
    assert.equal(await sweeper.sweep(refusedAt + 86_400_000 - 60_000), 0, 'kept within the day');
    assert.equal(await listener.queue.getJobState(jobId), 'failed');
    assert.equal(await sweeper.sweep(Date.now() + 86_400_000 + 1000), 1, 'removed past the day');
    assert.equal(await listener.queue.getJob(jobId), undefined);
    assert.deepEqual(await sweeper.list(), []);
  } finally {
    await queue.close();
    client.disconnect();
    await done();
  }
});
