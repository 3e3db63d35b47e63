/**
 * The spooling producer's decisions, against an in-memory twin of the queue writer (test/helpers/memory-writer.ts)
 * and a real spool in a temporary directory: where a delivery goes (Redis, the spool, neither), how the drainer
 * shrinks a failing batch, and when it quarantines a record. The same paths against a real Redis are in
 * drain.test.ts, large.test.ts and faults.test.ts.
 */

import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { EnqueueError } from '../../src/errors.ts';
import { bindRawBody, type WebhookJob } from '../../src/queue/contract.ts';
import type { DrainLimits } from '../../src/spool/drain-batches.ts';
import { Spool } from '../../src/spool/spool.ts';
import {
  DRAIN_MS_PER_MIB,
  largeBodyBytes,
  QUARANTINE_AFTER_FAILURES,
  SpoolDrainer,
  SpoolingProducer,
} from '../../src/spool/spooling-producer.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { MemoryWriter } from '../helpers/memory-writer.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';

const tempDir = useTempDirs('spooling-producer-');

const ACK_BUDGET_MS = 20;
/** The writer's `ENQUEUE_TIMEOUT_MS`: short, so that a write left hanging at close does not hold the test up. */
const WRITER_TIMEOUT_MS = 200;

/** The listener's side: a spooling producer over a writer twin and a fresh spool. Its timed drain never runs. */
async function listenerSide(t: TestContext, maxBytes = 1 << 24) {
  const writer = new MemoryWriter(WRITER_TIMEOUT_MS);
  const { spool } = await Spool.open({ dir: tempDir(), maxBytes });
  const producer = new SpoolingProducer(writer, spool, { ackBudgetMs: ACK_BUDGET_MS, drainIntervalMs: 3_600_000 });
  t.after(() => producer.close());
  return { writer, spool, producer };
}

/** The drain's side: a spool holding `jobs` (in one segment), and a drainer writing to a writer twin. */
async function drainSide(t: TestContext, jobs: WebhookJob[], batch?: Partial<DrainLimits>) {
  const writer = new MemoryWriter(WRITER_TIMEOUT_MS);
  const { spool } = await Spool.open({ dir: tempDir(), maxBytes: 1 << 26 });
  t.after(() => spool.close());
  await Promise.all(jobs.map((job) => spool.append(job)));
  return { writer, spool, drainer: new SpoolDrainer(spool, writer, { batch }) };
}

/** `jobFixture(i)`'s `i`. */
const indexOf = (job: WebhookJob): number => Number(job.data.deliveryId.slice(-12));
/** The writes asked for, batch by batch, as `jobFixture` indexes. */
const batchesOf = (writer: MemoryWriter): number[][] => writer.batches().map((jobs) => jobs.map(indexOf));
const fixtures = (n: number): WebhookJob[] => Array.from({ length: n }, (_, i) => jobFixture(i));

const failsWith = (reason: EnqueueError['reason']) => (err: unknown) => {
  assert.ok(err instanceof EnqueueError, `an EnqueueError, not ${String(err)}`);
  assert.equal(err.reason, reason);
  return true;
};

/** Delivery `i` with a body of more than `bytes` bytes, bound to its bytes as the listener builds it. */
function jobWithBody(i: number, bytes: number): WebhookJob {
  const job = jobFixture(i);
  const raw = Buffer.from(`{"relatedtype":"invoice","event":"step","relatedid":"${i}","pad":"${'x'.repeat(bytes)}"}`);
  job.data.rawBody = raw.toString('utf8');
  bindRawBody(job.data, raw);
  return job;
}

test('a delivery goes to Redis when the writer answers within the ack budget', async (t) => {
  const { writer, spool, producer } = await listenerSide(t);
  const job = jobFixture(1);

  assert.deepEqual(await producer.enqueue(job), { jobId: job.data.deliveryId, duplicate: false });
  assert.equal(writer.calls.length, 1);
  assert.equal(writer.calls[0]?.silenceMs, ACK_BUDGET_MS, 'the write is given the ack budget');
  assert.ok(writer.jobs.has(job.data.dedupKey));
  assert.equal(spool.status().depth, 0);
});

for (const reason of ['not_connected', 'timeout', 'backlog', 'redis_error'] as const) {
  test(`a write that fails with ${reason} sends the delivery to the spool, spoolReason ${reason}`, async (t) => {
    const { writer, spool, producer } = await listenerSide(t);
    writer.outcome = () => ({ fail: reason });
    const job = jobFixture(1);

    const result = await producer.enqueue(job);

    assert.deepEqual(result, { jobId: job.data.deliveryId, duplicate: false, spooled: true, spoolReason: reason });
    assert.equal(writer.calls.length, 1);
    assert.equal(spool.status().depth, 1);
  });
}

test('a write Redis leaves unanswered for the ack budget sends the delivery to the spool, spoolReason timeout', async (t) => {
  const { writer, spool, producer } = await listenerSide(t);
  writer.outcome = () => 'hang';

  const result = await producer.enqueue(jobFixture(1));

  assert.equal(result.spooled, true);
  assert.equal(result.spoolReason, 'timeout');
  assert.equal(writer.calls[0]?.silenceMs, ACK_BUDGET_MS);
  assert.equal(spool.status().depth, 1);
});

test('a stalled writer is not asked: the delivery goes straight to the spool, spoolReason stalled', async (t) => {
  const { writer, spool, producer } = await listenerSide(t);
  writer.isStalled = true;

  const result = await producer.enqueue(jobFixture(1));

  assert.equal(result.spooled, true);
  assert.equal(result.spoolReason, 'stalled');
  assert.equal(writer.calls.length, 0, 'no write was sent');
  assert.equal(spool.status().depth, 1);
});

test('a body too large for the ack budget goes to the spool first, spoolReason large, without a write', async (t) => {
  const { writer, spool, producer } = await listenerSide(t);
  const job = jobWithBody(1, largeBodyBytes(ACK_BUDGET_MS));

  const result = await producer.enqueue(job);

  assert.deepEqual(result, { jobId: job.data.deliveryId, duplicate: false, spooled: true, spoolReason: 'large' });
  assert.equal(writer.calls.length, 0, 'Redis was not asked');
  assert.equal(spool.status().depth, 1);
});

test('a large body the spool cannot take goes to Redis with the whole write deadline, not the ack budget', async (t) => {
  // Healthy (below its size limit) but without room for the body.
  const { writer, spool, producer } = await listenerSide(t, 64 * 1024);
  assert.equal(spool.status().healthy, true);
  const job = jobWithBody(1, largeBodyBytes(ACK_BUDGET_MS));

  assert.deepEqual(await producer.enqueue(job), { jobId: job.data.deliveryId, duplicate: false });
  assert.equal(writer.calls.length, 1);
  assert.equal(writer.calls[0]?.silenceMs, undefined, 'no ack budget: the writer deadline applies');
  assert.equal(spool.status().depth, 0);
});

test('Redis failing and the spool full: the delivery is refused with spool_full, naming Redis’s reason', async (t) => {
  const { writer, producer } = await listenerSide(t, 1);
  writer.outcome = () => ({ fail: 'redis_error' });

  await assert.rejects(producer.enqueue(jobFixture(1)), (err) => {
    failsWith('spool_full')(err);
    assert.match((err as Error).message, /redis_error/);
    return true;
  });
  assert.equal(writer.calls.length, 1);
});

test('Redis failing and the spool failing otherwise: the delivery is refused with spool_error', async (t) => {
  const { writer, spool, producer } = await listenerSide(t);
  writer.outcome = () => ({ fail: 'timeout' });
  await spool.close();

  await assert.rejects(producer.enqueue(jobFixture(1)), failsWith('spool_error'));
});

test('the drain writes each batch with a deadline that grows with its size, without the ack budget', async (t) => {
  const { writer, drainer } = await drainSide(t, [jobWithBody(0, 1536 * 1024)]);

  assert.deepEqual(await drainer.pass(), { queued: 1, duplicate: 0, quarantined: 0 });
  assert.equal(writer.calls.length, 1);
  assert.equal(writer.calls[0]?.silenceMs, undefined);
  assert.equal(writer.calls[0]?.timeoutMs, WRITER_TIMEOUT_MS + 2 * DRAIN_MS_PER_MIB, 'a record of 1.5 MiB: 2 MiB');
});

test('the drainer retries a failing batch in halves, down to the one record that fails', async (t) => {
  const { writer, spool, drainer } = await drainSide(t, fixtures(4));
  writer.outcome = (job) => (indexOf(job) === 3 ? { fail: 'redis_error' } : 'answer');

  await assert.rejects(drainer.pass(), failsWith('redis_error'));

  // 4 fail together; 2 pass; the next 2 fail; 1 passes; the last fails alone and stops the pass.
  assert.deepEqual(batchesOf(writer), [[0, 1, 2, 3], [0, 1], [2, 3], [2], [3]]);
  assert.deepEqual(drainer.total, { queued: 3, duplicate: 0, quarantined: 0 });
  assert.equal(spool.status().depth, 1);
});

test('after a failed batch, each confirmed batch doubles the next one, up to the largest', async (t) => {
  const { writer, drainer } = await drainSide(t, fixtures(12), { entries: 4 });
  // Record 0 fails the first time it is written, and only then.
  let failedOnce = false;
  writer.outcome = (job) => {
    if (indexOf(job) !== 0 || failedOnce) return 'answer';
    failedOnce = true;
    return { fail: 'timeout' };
  };

  assert.deepEqual(await drainer.pass(), { queued: 12, duplicate: 0, quarantined: 0 });

  // 4 fail; 2 pass; then 4 (the largest) at a time.
  assert.deepEqual(batchesOf(writer), [
    [0, 1, 2, 3],
    [0, 1],
    [2, 3, 4, 5],
    [6, 7, 8, 9],
    [10, 11],
  ]);
});

test(`a record that fails alone ${QUARANTINE_AFTER_FAILURES} times is quarantined once a write probe succeeds, and the drain goes on`, async (t) => {
  const { writer, spool, drainer } = await drainSide(t, fixtures(2));
  writer.outcome = (job) => (indexOf(job) === 0 ? { fail: 'redis_error' } : 'answer');

  for (let pass = 1; pass < QUARANTINE_AFTER_FAILURES; pass++) {
    await assert.rejects(drainer.pass(), failsWith('redis_error'));
    assert.equal(spool.status().depth, 2, `pass ${pass}: nothing moved`);
    assert.equal(writer.probes, 0, `pass ${pass}: not probed yet`);
  }
  assert.deepEqual(await drainer.pass(), { queued: 1, duplicate: 0, quarantined: 1 });

  assert.equal(writer.probes, 1);
  assert.equal(spool.status().depth, 0);
  assert.equal(spool.status().quarantined, 1);
  assert.ok(writer.jobs.has(jobFixture(1).data.dedupKey), 'the record behind it reached Redis');
});

test('a record is not quarantined while the write probe fails: Redis takes no write at all', async (t) => {
  const { writer, spool, drainer } = await drainSide(t, fixtures(1));
  writer.outcome = () => ({ fail: 'redis_error' });
  writer.writable = false;

  for (let pass = 1; pass <= QUARANTINE_AFTER_FAILURES + 1; pass++) {
    await assert.rejects(drainer.pass(), failsWith('redis_error'));
  }
  assert.equal(writer.probes, 2, 'probed on each pass from the last allowed failure on');
  assert.equal(spool.status().depth, 1);
  assert.equal(spool.status().quarantined, 0);

  writer.writable = true;
  assert.deepEqual(await drainer.pass(), { queued: 0, duplicate: 0, quarantined: 1 });
  assert.equal(spool.status().quarantined, 1);
});

test('not_connected stops the pass at once: the batch is not retried smaller', async (t) => {
  const { writer, spool, drainer } = await drainSide(t, fixtures(4));
  writer.outcome = () => ({ fail: 'not_connected' });

  await assert.rejects(drainer.pass(), failsWith('not_connected'));

  assert.deepEqual(batchesOf(writer), [[0, 1, 2, 3]]);
  assert.equal(spool.status().depth, 4);
});

test('not_connected does not count as a failure of the record toward its quarantine', async (t) => {
  const { writer, spool, drainer } = await drainSide(t, fixtures(1));
  writer.outcome = () => ({ fail: 'not_connected' });
  for (let pass = 0; pass < QUARANTINE_AFTER_FAILURES; pass++) {
    await assert.rejects(drainer.pass(), failsWith('not_connected'));
  }

  writer.outcome = () => ({ fail: 'redis_error' });
  for (let pass = 1; pass < QUARANTINE_AFTER_FAILURES; pass++) {
    await assert.rejects(drainer.pass(), failsWith('redis_error'));
  }
  assert.equal(writer.probes, 0, 'not probed: the record has failed fewer times than allowed');
  assert.equal(spool.status().quarantined, 0);

  assert.deepEqual(await drainer.pass(), { queued: 0, duplicate: 0, quarantined: 1 });
  assert.equal(spool.status().depth, 0);
});
