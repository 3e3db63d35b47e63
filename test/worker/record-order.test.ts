import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { newDeliveryId } from '../../src/queue/contract.ts';
import { recordQueueName } from '../../src/queue/records.ts';
import { sign } from '../../src/sellsy/signature.ts';
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

test('RECORD_ORDER=latest: jobs of one record never run at once, a burst collapses, and a run follows the last delivery', async () => {
  const listener = await startTestListener(redis.url);
  await untilReady(listener);
  const active = new Map<string, number>();
  const runs: { record: string; startedAt: number; timestamp: string }[] = [];
  let overlaps = 0;
  const worker = await startTestWorker(
    listener,
    { RECORD_ORDER: 'latest', WORKER_CONCURRENCY: '20' },
    {
      'invoice.*': async (event) => {
        const record = event?.relatedId ?? '';
        active.set(record, (active.get(record) ?? 0) + 1);
        if ((active.get(record) ?? 0) > 1) overlaps++;
        runs.push({ record, startedAt: Date.now(), timestamp: event?.timestamp ?? '' });
        await new Promise((r) => setTimeout(r, 100));
        active.set(record, (active.get(record) ?? 0) - 1);
      },
    },
  );
  const recordQueue = new Queue(recordQueueName(listener.config.queueName), { connection: { url: redis.url } });
  try {
    // 30 updates of record A and 30 of record B, 10 ms apart: a few runs each instead of 30.
    const lastPostedAt = new Map<string, number>();
    for (let n = 0; n < 30; n++) {
      for (const record of ['A', 'B']) {
        const res = await post(listener.url, recordBody(record, n), json);
        assert.equal(res.status, 200);
        lastPostedAt.set(record, Date.now());
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    const ingestDone = async () => (await listener.queue.getJobCounts('completed')).completed === 60;
    await waitFor(ingestDone, 20_000, 'every delivery passed the delivery stage');
    await waitFor(
      async () => {
        const counts = await recordQueue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
        return Object.values(counts).every((c) => c === 0) && [...active.values()].every((c) => c === 0);
      },
      20_000,
      'the record queue is empty',
    );
    assert.equal(overlaps, 0, 'two runs of one record never overlapped');
    for (const record of ['A', 'B']) {
      const mine = runs.filter((r) => r.record === record);
      assert.ok(mine.length >= 1 && mine.length < 30, `record ${record}: ${mine.length} runs for 30 deliveries`);
      assert.ok(
        (mine.at(-1)?.startedAt ?? 0) >= (lastPostedAt.get(record) ?? 0),
        `record ${record}: a run started after its last delivery was accepted`,
      );
      assert.equal(
        mine.at(-1)?.timestamp,
        String(1_700_000_029),
        `record ${record}: the last run saw the last delivery`,
      );
    }
  } finally {
    await worker.close();
    await recordQueue.close();
    await listener.close();
  }
});

test('RECORD_ORDER=latest: a delivery dropped by the deduplication while its record waits still runs (updated, then deleted)', async () => {
  const listener = await startTestListener(redis.url);
  await untilReady(listener);
  const seen: string[] = [];
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const worker = await startTestWorker(
    listener,
    { RECORD_ORDER: 'latest', WORKER_CONCURRENCY: '1' },
    {
      'third.*': async (event) => {
        seen.push(`${event?.relatedId}:${event?.event}`);
        if (event?.relatedId === 'blocker') await gate;
      },
    },
  );
  const recordQueue = new Queue(recordQueueName(listener.config.queueName), { connection: { url: redis.url } });
  const body = (id: string, verb: string, n: number) =>
    JSON.stringify({ relatedtype: 'third', event: verb, relatedid: id, corpid: '929', timestamp: String(n) });
  try {
    // One record worker slot: the blocker holds it, so R's first job waits while R's later deliveries arrive.
    await post(listener.url, body('blocker', 'updated', 1), json);
    await waitFor(() => seen.includes('blocker:updated'), 10_000, 'the blocker runs');
    await post(listener.url, body('R', 'updated', 2), json);
    await post(listener.url, body('R', 'deleted', 3), json);
    await waitFor(async () => (await listener.queue.getJobCounts('completed')).completed === 3, 10_000, 'ingested');
    release();
    await waitFor(() => seen.some((s) => s.startsWith('R:')), 10_000, 'R ran');
    // Every delivery passed the ingest stage: once the record queue holds nothing, no other run of R can come.
    await waitFor(
      async () => {
        const counts = await recordQueue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
        return Object.values(counts).every((c) => c === 0);
      },
      10_000,
      'the record queue is empty',
    );
    assert.deepEqual(
      seen.filter((s) => s.startsWith('R:')),
      ['R:deleted'],
      'one run for R, on its latest delivery',
    );
  } finally {
    release();
    await worker.close();
    await recordQueue.close();
    await listener.close();
  }
});

/** A listener and a RECORD_ORDER=latest worker whose `invoice.*` handler notes each run's delivery id. */
async function recordRuns(env: Record<string, string> = {}) {
  const listener = await startTestListener(redis.url, env);
  await untilReady(listener);
  const runs: string[] = [];
  const worker = await startTestWorker(
    listener,
    { RECORD_ORDER: 'latest', ...env },
    {
      'invoice.*': async (_event, ctx) => {
        runs.push(ctx.deliveryId);
      },
    },
  );
  const records = new Queue(recordQueueName(listener.config.queueName), { connection: { url: redis.url } });
  records.on('error', () => undefined);
  return {
    listener,
    worker,
    records,
    runs,
    async close() {
      await worker.close();
      await records.close();
      await listener.close();
    },
  };
}

test('RECORD_ORDER=latest: a delivery folded by the deduplication after its record ran makes the record run again, under its own id', async () => {
  const { listener, runs, close } = await recordRuns();
  try {
    const body = recordBody('F1', 1);
    const first = (await post(listener.url, body, json)).body;
    await waitFor(() => runs.includes(first.deliveryId as string), 10_000, 'the record ran');
    const again = (await post(listener.url, body, json)).body;
    assert.equal(again.duplicate, true);
    await waitFor(() => runs.includes(again.deliveryId as string), 10_000, 'the record ran again');
    assert.deepEqual(runs, [first.deliveryId, again.deliveryId]);
  } finally {
    await close();
  }
});

test('RECORD_ORDER=latest: a spooled delivery found to be a duplicate when the spool drains makes its record run again', async () => {
  const { listener, runs, close } = await recordRuns();
  try {
    const first = (await post(listener.url, recordBody('F2', 1), json)).body;
    await waitFor(() => runs.includes(first.deliveryId as string), 10_000, 'the record ran');
    const queued = await listener.queue.getJob(first.jobId as string);
    assert.ok(queued);
    const folded = { ...queued.data, deliveryId: newDeliveryId(), receivedAt: new Date().toISOString() };
    const spooling = listener.spooling;
    assert.ok(spooling);
    await spooling.spool.append({ name: queued.name, data: folded });
    await spooling.drained(10_000);
    assert.ok(
      listener.logs.some((l) => l.msg === 'spooled deliveries moved to the queue' && l.duplicate === 1),
      'the drain found it a duplicate',
    );
    await waitFor(() => runs.includes(folded.deliveryId), 10_000, 'the record ran again');
  } finally {
    await close();
  }
});

test('SIGNATURE_CHECK=worker: a folded delivery whose signature is wrong does not make its record run again', async () => {
  const key = 'record-order-sign-key';
  const { listener, records, close } = await recordRuns({ SELLSY_SIGN_KEY: key, SIGNATURE_CHECK: 'worker' });
  try {
    const body = recordBody('F3', 1);
    const signed = { ...json, 'x-webhook-signature': sign(key, body) };
    const first = (await post(listener.url, body, signed)).body;
    await waitFor(async () => (await records.getJobState(first.deliveryId as string)) === 'completed', 10_000, 'ran');
    const forged = (await post(listener.url, body, { ...json, 'x-webhook-signature': sign('not-the-key', body) })).body;
    assert.equal(forged.duplicate, true);
    assert.equal(await records.getJob(forged.deliveryId as string), undefined, 'no record job for the forged one');
    const resent = (await post(listener.url, body, signed)).body;
    assert.equal(resent.duplicate, true);
    assert.ok(await records.getJob(resent.deliveryId as string), 'a well-signed duplicate does get one');
  } finally {
    await close();
  }
});

test('RECORD_ORDER=off: a folded delivery adds nothing to the record queue', async () => {
  const { listener, records, runs, close } = await recordRuns({ RECORD_ORDER: 'off' });
  try {
    const body = recordBody('F4', 1);
    const first = (await post(listener.url, body, json)).body;
    await waitFor(() => runs.includes(first.deliveryId as string), 10_000, 'the delivery ran');
    assert.equal((await post(listener.url, body, json)).body.duplicate, true);
    assert.equal(await records.count(), 0);
  } finally {
    await close();
  }
});

test('RECORD_ORDER=latest: a delivery folded while its record runs on the first one gets one more run, on the folded one', async () => {
  const listener = await startTestListener(redis.url);
  await untilReady(listener);
  const runs: string[] = [];
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const worker = await startTestWorker(
    listener,
    { RECORD_ORDER: 'latest' },
    {
      'invoice.*': async (_event, ctx) => {
        runs.push(ctx.deliveryId);
        if (runs.length === 1) await gate;
      },
    },
  );
  try {
    const body = recordBody('F5', 1);
    const first = (await post(listener.url, body, json)).body;
    await waitFor(() => runs.length === 1, 10_000, 'the first run started');
    const again = (await post(listener.url, body, json)).body;
    assert.equal(again.duplicate, true);
    release();
    await waitFor(() => runs.length === 2, 10_000, 'one more run');
    assert.deepEqual(runs, [first.deliveryId, again.deliveryId]);
  } finally {
    release();
    await worker.close();
    await listener.close();
  }
});
