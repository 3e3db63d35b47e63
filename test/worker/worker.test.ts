import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PermanentError, RetryLaterError } from '../../src/errors.ts';
import type { Handler } from '../../src/handlers/handler.ts';
import { sign } from '../../src/sellsy/signature.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
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

/** A listener and a worker on a fresh queue; both closed by `done()`. */
async function pair(
  listenerEnv: Record<string, string>,
  workerEnv: Record<string, string>,
  handlers?: Record<string, Handler | Handler[]>,
) {
  const listener = await startTestListener(redis.url, listenerEnv);
  await untilReady(listener);
  const worker = await startTestWorker(listener, workerEnv, handlers);
  return {
    listener,
    worker,
    async done() {
      await worker.close();
      await listener.close();
    },
  };
}

async function deliver(listener: TestListener, body: string, headers: Record<string, string> = json): Promise<string> {
  const res = await post(listener.url, body, headers);
  assert.equal(res.status, 200);
  return res.body.jobId as string;
}

async function settled(listener: TestListener, jobId: string, state: 'completed' | 'failed') {
  await waitFor(async () => (await listener.queue.getJobState(jobId)) === state, 15_000, `job ${jobId} ${state}`);
  const job = await listener.queue.getJob(jobId);
  assert.ok(job);
  return job;
}

test('the worker takes a delivered job, logs it with the delivery keys and completes it', async () => {
  const { listener, worker, done } = await pair({}, {});
  try {
    const jobId = await deliver(listener, '{"relatedtype":"invoice","event":"step","relatedid":"42","corpid":"929"}');
    await settled(listener, jobId, 'completed');
    await waitFor(() => worker.logs.some((l) => l.jobId === jobId && l.msg === 'job processed'), 5000, 'log line');
    const line = worker.logs.find((l) => l.jobId === jobId && l.msg === 'job processed');
    assert.equal(line?.event, 'invoice.step');
    assert.equal(line?.account, '929');
    assert.equal(line?.relatedId, '42');
    assert.equal(line?.outcome, 'completed');
    assert.equal(line?.attempt, 1);
  } finally {
    await done();
  }
});

test('handlers run in registration order for every pattern that matches the job name, and only those', async () => {
  const calls: string[] = [];
  const h =
    (name: string): Handler =>
    async () => {
      calls.push(name);
    };
  const { listener, done } = await pair(
    {},
    {},
    {
      'invoice.*': h('invoice.*'),
      '*': h('*'),
      'client.created': h('client.created'),
      '*.step': h('*.step'),
      unknown: h('unknown'),
      'invoice.step': [h('invoice.step#1'), h('invoice.step#2')],
    },
  );
  try {
    await settled(listener, await deliver(listener, recordBody('1', 1)), 'completed');
    assert.deepEqual(calls, ['invoice.*', '*', '*.step', 'invoice.step#1', 'invoice.step#2']);
  } finally {
    await done();
  }
});

test('a handler that fails twice is retried with backoff and the job completes on its third attempt', async () => {
  let calls = 0;
  const attempts: number[] = [];
  const { listener, done } = await pair(
    { JOB_BACKOFF_MS: '20', JOB_ATTEMPTS: '5' },
    {},
    {
      '*': async (_e, ctx) => {
        calls++;
        attempts.push(ctx.attempt);
        if (calls < 3) throw new Error(`target down (${calls})`);
      },
    },
  );
  try {
    const job = await settled(listener, await deliver(listener, recordBody('2', 1)), 'completed');
    assert.equal(calls, 3);
    assert.deepEqual(attempts, [1, 2, 3], 'context.attempt counts the runs');
    assert.equal(job.attemptsMade, 3, 'two failed attempts, then the one that succeeded');
  } finally {
    await done();
  }
});

test('a job that exhausts its attempts stays in the failed set with its reason and attempts', async () => {
  const { listener, worker, done } = await pair(
    { JOB_BACKOFF_MS: '10', JOB_ATTEMPTS: '3' },
    {},
    {
      'invoice.*': async () => {
        throw new Error('always down');
      },
    },
  );
  try {
    const job = await settled(listener, await deliver(listener, recordBody('3', 1)), 'failed');
    assert.equal(job.attemptsMade, 3);
    assert.match(job.failedReason, /\[user invoice\.\*\] always down/);
    // Kept as a dead letter for JOB_KEEP_FAILED_SECONDS (30 days), not evicted by a count; retried with jittered
    // exponential backoff; completed jobs go after JOB_KEEP_COMPLETED_SECONDS (1 day).
    assert.deepEqual(job.opts.removeOnFail, { age: 30 * 24 * 3600 });
    assert.deepEqual(job.opts.removeOnComplete, { age: 24 * 3600 });
    assert.deepEqual(job.opts.backoff, { type: 'exponential', delay: 10, jitter: 0.5 });
    assert.deepEqual(await listener.queue.getFailed().then((jobs) => jobs.map((j) => j.id)), [job.id]);
    await waitFor(
      () => worker.logs.some((l) => l.jobId === job.id && l.outcome === 'dead_letter'),
      5000,
      'dead-letter log',
    );
    assert.equal(worker.logs.filter((l) => l.jobId === job.id && l.outcome === 'retry').length, 2);
  } finally {
    await done();
  }
});

test('a PermanentError fails the job at once, without using the other attempts', async () => {
  let calls = 0;
  const { listener, done } = await pair(
    { JOB_BACKOFF_MS: '10', JOB_ATTEMPTS: '5' },
    {},
    {
      '*': async () => {
        calls++;
        throw new PermanentError('the target refused the event (400)');
      },
    },
  );
  try {
    const job = await settled(listener, await deliver(listener, recordBody('4', 1)), 'failed');
    assert.equal(calls, 1);
    assert.equal(job.attemptsMade, 1);
    assert.match(job.failedReason, /refused the event/);
  } finally {
    await done();
  }
});

test('a RetryLaterError puts the job back without using an attempt', async () => {
  let calls = 0;
  const { listener, done } = await pair(
    { JOB_BACKOFF_MS: '10', JOB_ATTEMPTS: '2' },
    {},
    {
      '*': async () => {
        calls++;
        if (calls <= 3) throw new RetryLaterError('429 from the API', 100);
      },
    },
  );
  try {
    const started = Date.now();
    const job = await settled(listener, await deliver(listener, recordBody('5', 1)), 'completed');
    assert.equal(calls, 4, 'three rate-limited runs and a fourth that succeeded, with only two attempts allowed');
    assert.ok(Date.now() - started >= 300, 'the worker waited 100 ms after each 429');
    assert.equal(job.attemptsMade, 1, 'only the run that succeeded counted as an attempt');
  } finally {
    await done();
  }
});

test('a RetryLaterError of 0 ms (Retry-After: 0) still uses no attempt (the delay Redis is given is at least 1 ms)', async () => {
  let calls = 0;
  const { listener, done } = await pair(
    { JOB_BACKOFF_MS: '10', JOB_ATTEMPTS: '1' },
    {},
    {
      '*': async () => {
        calls++;
        if (calls === 1) throw new RetryLaterError('429, Retry-After: 0', 0);
      },
    },
  );
  try {
    const job = await settled(listener, await deliver(listener, recordBody('5b', 1)), 'completed');
    assert.equal(calls, 2);
    assert.equal(job.attemptsMade, 1, 'with one attempt allowed, the job still completed');
  } finally {
    await done();
  }
});

test('an unparsed delivery with no "unknown" handler fails at once as a dead letter', async () => {
  const first = await pair({ JOB_ATTEMPTS: '5' }, {}, { '*': async () => undefined });
  try {
    const job = await settled(first.listener, await deliver(first.listener, 'not json at all'), 'failed');
    assert.equal(job.name, 'unknown');
    assert.equal(job.attemptsMade, 1);
    assert.match(job.failedReason, /not a Sellsy event \(invalid_json\)/);
  } finally {
    await first.done();
  }
});

test('an unparsed delivery is handled by an "unknown" handler, with no event and its raw body', async () => {
  const seen: unknown[] = [];
  const second = await pair(
    {},
    {},
    {
      unknown: async (event, ctx) => {
        seen.push(event, ctx.data.rawBody);
      },
    },
  );
  try {
    await settled(second.listener, await deliver(second.listener, 'not json at all'), 'completed');
    assert.deepEqual(seen, [null, 'not json at all']);
  } finally {
    await second.done();
  }
});

test('SIGNATURE_CHECK=worker: the worker verifies first, dead-letters a bad signature and handles a good one', async () => {
  const key = 'worker-side-key';
  const handled: string[] = [];
  const { listener, done } = await pair(
    { SELLSY_SIGN_KEY: key, SIGNATURE_CHECK: 'worker', JOB_ATTEMPTS: '5' },
    { SELLSY_SIGN_KEY: key, SIGNATURE_CHECK: 'worker' },
    {
      '*': async (event) => {
        handled.push(event?.relatedId ?? '');
      },
    },
  );
  try {
    const bad = recordBody('6', 1);
    const badJob = await settled(
      listener,
      await deliver(listener, bad, { ...json, 'x-webhook-signature': sign('another key', bad) }),
      'failed',
    );
    assert.equal(badJob.attemptsMade, 1);
    assert.match(badJob.failedReason, /signature: bad_signature: X-Webhook-Signature does not match/);
    const good = recordBody('7', 1);
    await settled(
      listener,
      await deliver(listener, good, { ...json, 'x-webhook-signature': sign(key, good) }),
      'completed',
    );
    assert.deepEqual(handled, ['7'], 'the badly signed delivery never reached a handler');
  } finally {
    await done();
  }
});

test('close() lets a running handler finish: the job completes', async () => {
  let started = false;
  let release = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const { listener, worker, done } = await pair(
    {},
    {},
    {
      '*': async () => {
        started = true;
        await released;
      },
    },
  );
  try {
    const jobId = await deliver(listener, recordBody('8', 1));
    await waitFor(() => started, 10_000, 'the handler started');
    let closed = false;
    const closing = worker.close().then(() => {
      closed = true;
    });
    // The handler is held while close() runs: a close() that did not wait for it would be over well within this
    // window, which is as short as that allows.
    await sleep(100);
    assert.equal(closed, false, 'close() waits for the running handler');
    release();
    await closing;
    assert.equal(await listener.queue.getJobState(jobId), 'completed');
  } finally {
    release();
    await done().catch(() => undefined);
  }
});

test('close() past the grace period aborts the handler and hands the job back unused; another worker completes it', async () => {
  let aborted = false;
  const listener = await startTestListener(redis.url, { JOB_ATTEMPTS: '3' });
  await untilReady(listener);
  const stuck = await startTestWorker(
    listener,
    { SHUTDOWN_TIMEOUT_MS: '1000' },
    {
      '*': (_e, ctx) =>
        new Promise<void>((_resolve, reject) => {
          ctx.signal.addEventListener('abort', () => {
            aborted = true;
            reject(new Error('aborted'));
          });
        }),
    },
  );
  try {
    const jobId = await deliver(listener, recordBody('9', 1));
    await waitFor(async () => (await listener.queue.getJobState(jobId)) === 'active', 10_000, 'the job is active');
    const closing = Date.now();
    await stuck.close();
    assert.ok(aborted, 'the handler saw its signal aborted');
    assert.ok(
      Date.now() - closing < 8000,
      'close() returned after the grace period (500 ms here), not after a lock expiry',
    );
    assert.equal(await listener.queue.getJobState(jobId), 'waiting');
    assert.equal((await listener.queue.getJob(jobId))?.attemptsMade, 0);
    const next = await startTestWorker(listener, {}, { '*': async () => undefined });
    try {
      await settled(listener, jobId, 'completed');
    } finally {
      await next.close();
    }
  } finally {
    await listener.close();
  }
});
