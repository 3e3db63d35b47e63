/**
 * The `postgres` handler with jobs running at the same time: their rows go in shared multi-row INSERTs (group commit),
 * with each job's own outcome. Jobs handled in the same tick are deterministic batches: the first two go alone (two
 * statements in flight at most), the rest together once one of those returns.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PermanentError } from '../../src/errors.ts';
import { type EventStore, openEventStore } from '../../src/handlers/postgres.ts';
import { createLogger } from '../../src/logger.ts';
import type { WebhookJob } from '../../src/queue/contract.ts';
import { contextOf, delivery, relay, rows, silent, store, withStore } from '../helpers/event-store.ts';
import { LogCapture } from '../helpers/listener.ts';
import { tempSchema } from '../helpers/postgres.ts';

const body = (i: number) => `{"relatedtype":"invoice","event":"step","relatedid":"${i}","corpid":"929"}`;

/** Every job handled at once; each one's outcome (undefined: stored, or the error). */
async function handleAll(s: EventStore, jobs: readonly WebhookJob[], log = silent): Promise<unknown[]> {
  const settled = await Promise.allSettled(jobs.map((job) => s.handler(job.data.event, contextOf(job, { log }))));
  return settled.map((r) => (r.status === 'fulfilled' ? undefined : r.reason));
}

const storedAt = (row: Record<string, unknown>) => (row.stored_at as Date).toISOString();

test('jobs handled at the same time are stored one row each, in fewer statements than jobs', async (t) => {
  const { db, store: s } = await withStore(t);
  const jobs = Array.from({ length: 20 }, (_, i) => delivery(i + 1, body(i + 1)));
  assert.deepEqual(await handleAll(s, jobs), Array(20).fill(undefined));
  const all = await rows(db);
  assert.deepEqual(
    all.map((r) => r.delivery_id),
    jobs.map((j) => j.data.deliveryId),
  );
  assert.deepEqual(
    all.map((r) => r.related_id),
    jobs.map((_, i) => String(i + 1)),
  );
  // stored_at is the statement's now(): one value per statement.
  assert.ok(new Set(all.map(storedAt)).size <= 3, 'the rows that waited went in one statement');
});

test('a batch stores each row exactly as a lone INSERT does', async (t) => {
  const { db, store: batched } = await withStore(t);
  const { db: oneByOne, store: single } = await withStore(t);
  const bodies: (string | Buffer)[] = [
    body(1),
    body(2),
    '{"relatedtype":"invoice","event":"step","relatedid":"3","corpid":"929","n\\u0000":"a\\u0000b","q":"\\"{x,y}\\" \\\\ NULL"}',
    Buffer.concat([Buffer.from('{"relatedtype":"invoice","relatedid":"4","x":"'), Buffer.from([0xe9, 0xff, 0])]),
    '{"relatedtype":"inv\\u0000oice","event":"st\\u0000ep","relatedid":"5","ownertype":"\\ud83d","timestamp":"1767225600"}',
    '{"relatedtype":"invoice","event":"step","relatedid":"6","timestamp":"yesterday","note":"日本 😀 , } { \\" \' NULL"}',
    'NULL',
    '',
  ];
  const jobs = bodies.map((b, i) => delivery(i + 1, b, i === 6 ? 'text/plain' : 'application/json'));
  assert.deepEqual(await handleAll(batched, jobs), Array(jobs.length).fill(undefined));
  for (const job of jobs) await store(single, job);
  const columns = (r: Record<string, unknown>) => ({ ...r, stored_at: undefined });
  const got = await rows(db);
  assert.equal(got.length, jobs.length);
  assert.deepEqual(got.map(columns), (await rows(oneByOne)).map(columns));
  assert.ok(new Set(got.map(storedAt)).size < jobs.length, 'some rows went in one statement');
});

test('the same delivery twice in one batch, or the same job twice, stores one row each', async (t) => {
  const capture = new LogCapture();
  const log = createLogger('debug', capture);
  const { db, store: s } = await withStore(t);
  const first = delivery(1, body(1));
  const second = delivery(2, body(2));
  const resent = delivery(3, body(2)); // same bytes as the second: same dedup key, another delivery id
  const third = delivery(4, body(4));
  assert.equal(resent.data.dedupKey, second.data.dedupKey);
  const jobs = [delivery(10, body(10)), delivery(11, body(11)), second, third, resent, first, first];
  assert.deepEqual(await handleAll(s, jobs, log), Array(jobs.length).fill(undefined));
  const all = await rows(db);
  assert.deepEqual(all.map((r) => r.delivery_id).sort(), [
    first.data.deliveryId,
    second.data.deliveryId,
    third.data.deliveryId,
    jobs[0]?.data.deliveryId,
    jobs[1]?.data.deliveryId,
  ]);
  const batch = all.filter(
    (r) => r.delivery_id !== jobs[0]?.data.deliveryId && r.delivery_id !== jobs[1]?.data.deliveryId,
  );
  assert.equal(new Set(batch.map(storedAt)).size, 1, 'the duplicates were in one statement');
  const already = capture.lines.filter((l) => l.msg === 'postgres: already stored').map((l) => l.deliveryId);
  assert.deepEqual(already.sort(), [first.data.deliveryId, resent.data.deliveryId].sort());
});

test('a bad row in a batch fails only its own job, for good; the others are stored', async (t) => {
  const { db, store: s } = await withStore(t);
  const jobs = Array.from({ length: 8 }, (_, i) => delivery(i + 1, body(i + 1)));
  const badId = jobs[3] as WebhookJob;
  badId.data.deliveryId = 'not-a-uuid';
  const badTime = jobs[5] as WebhookJob;
  badTime.data.receivedAt = 'not a time';
  const outcomes = await handleAll(s, jobs);
  for (const [i, outcome] of outcomes.entries()) {
    if (i !== 3 && i !== 5) {
      assert.equal(outcome, undefined, `job ${i} is stored`);
      continue;
    }
    assert.ok(outcome instanceof PermanentError, `job ${i} fails for good`);
    assert.match(outcome.message, i === 3 ? /not-a-uuid/ : new RegExp(badTime.data.deliveryId));
  }
  assert.deepEqual(
    (await rows(db)).map((r) => r.related_id),
    ['1', '2', '3', '5', '7', '8'],
  );
});

test('a lost connection fails every job of the batch with an ordinary (retried) error, and stores none', async (t) => {
  const db = await tempSchema();
  t.after(() => db.drop());
  const proxy = await relay(db.url);
  const s = await openEventStore({ url: proxy.url, schema: db.schema }, silent);
  t.after(() => s.close());
  await store(s, delivery(100, body(100)));
  await proxy.cut();
  const jobs = Array.from({ length: 8 }, (_, i) => delivery(i + 1, body(i + 1)));
  const outcomes = await handleAll(s, jobs);
  for (const outcome of outcomes) {
    assert.ok(outcome instanceof Error, 'the job fails');
    assert.ok(!(outcome instanceof PermanentError), 'and is retried');
  }
  assert.equal((await rows(db)).length, 1);
});
