import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { recordQueueName } from '../../src/queue/records.ts';
import { waitFor } from '../helpers/cli.ts';
import { post, startTestListener, untilReady } from '../helpers/listener.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
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
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(
      seen.filter((s) => s.startsWith('R:')),
      ['R:deleted'],
      'one run for R, on its latest delivery',
    );
  } finally {
    release();
    await worker.close();
    await listener.close();
  }
});
