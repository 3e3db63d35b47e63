/**
 * Reading the postgres handler's rows back as jobs (src/handlers/postgres-deliveries.ts), on a real PostgreSQL: keyset
 * pages in storing order, the window and id filters, the byte bound of a page, and the jobs rebuilt as stored.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openEventStore } from '../../src/handlers/postgres.ts';
import { openStoredDeliveries, type StoredDelivery } from '../../src/handlers/postgres-deliveries.ts';
import { delivery, silent, store, withStore } from '../helpers/event-store.ts';
import { tempSchema } from '../helpers/postgres.ts';

const body = (i: number, pad = '') =>
  JSON.stringify({ eventType: 'x', event: 'step', relatedtype: 'invoice', relatedid: String(i), corpid: '929', pad });

async function all(pages: AsyncGenerator<StoredDelivery[]>): Promise<StoredDelivery[][]> {
  const out: StoredDelivery[][] = [];
  for await (const page of pages) out.push(page);
  return out;
}

test('pages of a few rows return every stored delivery once, in (stored_at, delivery_id) order, ties included', async (t) => {
  const { db, store: events } = await withStore(t);
  const jobs = Array.from({ length: 40 }, (_, i) => delivery(i + 1, body(i + 1)));
  // At once: the group commit puts most of them in shared statements, whose rows have the same stored_at.
  await Promise.all(jobs.map((job) => store(events, job)));
  const reader = await openStoredDeliveries({ url: db.url, schema: db.schema });
  t.after(() => reader.close());

  const pages = await all(reader.pages({ since: Date.now() - 60_000, until: null, ids: new Set() }, { rows: 7 }));
  assert.ok(pages.length >= 6, `${pages.length} pages`);
  assert.ok(
    pages.every((p) => p.length <= 7),
    'no page over its size',
  );
  const rows = pages.flat();
  assert.deepEqual(rows.map((r) => r.deliveryId).sort(), jobs.map((j) => j.data.deliveryId).sort());
  const expected = await db.query<{ delivery_id: string }>(
    `SELECT delivery_id FROM ${db.schema}.sellsy_events ORDER BY stored_at, delivery_id`,
  );
  assert.deepEqual(
    rows.map((r) => r.deliveryId),
    expected.map((r) => r.delivery_id),
  );
  const times = await db.query<{ n: string }>(`SELECT count(DISTINCT stored_at) AS n FROM ${db.schema}.sellsy_events`);
  assert.ok(Number(times[0]?.n) < jobs.length, 'rows share a stored_at, so pages break ties by delivery id');

  // Rebuilt as the job that was stored (the test jobs carry a request, which the store does not keep).
  const job = jobs[0];
  const row = rows.find((r) => r.deliveryId === job?.data.deliveryId);
  const { request: _request, ...stored } = job?.data ?? {};
  assert.deepEqual(row?.data, { ...stored, source: 'webhook', event: JSON.parse(JSON.stringify(job?.data.event)) });
});

test('the window (since, until), the ids and the byte bound of a page', async (t) => {
  const { db, store: events } = await withStore(t);
  const first = [delivery(1, body(1)), delivery(2, body(2))];
  for (const job of first) await store(events, job);
  await new Promise((r) => setTimeout(r, 30));
  const since = Date.now();
  const big = 'x'.repeat(4000);
  const second = Array.from({ length: 5 }, (_, i) => delivery(10 + i, body(10 + i, big)));
  for (const job of second) await store(events, job);
  await new Promise((r) => setTimeout(r, 30));
  const until = Date.now();
  await new Promise((r) => setTimeout(r, 30));
  await store(events, delivery(20, body(20)));

  const reader = await openStoredDeliveries({ url: db.url, schema: db.schema });
  t.after(() => reader.close());
  const ids = (pages: StoredDelivery[][]) => pages.flat().map((r) => r.deliveryId);
  const window = { since, until, ids: new Set<string>() };
  assert.deepEqual(
    ids(await all(reader.pages(window))),
    second.map((j) => j.data.deliveryId),
  );
  // A page stops once its bodies pass the bound, its first row always in.
  const small = await all(reader.pages(window, { bytes: 6000 }));
  assert.deepEqual(
    small.map((p) => p.length),
    [2, 2, 1],
  );
  assert.deepEqual(
    ids(await all(reader.pages({ since: 0, until: null, ids: new Set([first[0]?.data.deliveryId ?? '', 'nope']) }))),
    [first[0]?.data.deliveryId],
  );
});

test('a store that does not answer, or not yet migrated to what the reader needs, is refused with what to do', async (t) => {
  await assert.rejects(
    openStoredDeliveries({ url: 'postgres://replay:secret@127.0.0.1:1/test', schema: 'public' }),
    (err: Error) =>
      /did not answer/.test(err.message) && err.message.includes(':***@') && !err.message.includes('secret'),
  );
  const db = await tempSchema();
  t.after(() => db.drop());
  await assert.rejects(openStoredDeliveries({ url: db.url, schema: db.schema }), /at migration 0.*start a worker/);
  const events = await openEventStore({ url: db.url, schema: db.schema }, silent);
  await events.close();
  const reader = await openStoredDeliveries({ url: db.url, schema: db.schema });
  await reader.close();
});

test('a store at migration 3 whose index is not built yet (or not valid) is read all the same', async (t) => {
  const { db, store: events } = await withStore(t);
  const jobs = [delivery(1, body(1)), delivery(2, body(2)), delivery(3, body(3))];
  for (const job of jobs) await store(events, job);
  // As after a CONCURRENTLY build that failed, or while one runs: present, not valid. (A unique one on duplicates.)
  await db.query(`DROP INDEX ${db.schema}.sellsy_events_stored_idx`);
  await assert.rejects(
    db.query(`CREATE UNIQUE INDEX CONCURRENTLY sellsy_events_stored_idx ON ${db.schema}.sellsy_events (event)`),
    /could not create unique index/,
  );
  const reader = await openStoredDeliveries({ url: db.url, schema: db.schema });
  t.after(() => reader.close());
  const read = (
    await all(reader.pages({ since: Date.now() - 60_000, until: null, ids: new Set() }, { rows: 2 }))
  ).flat();
  assert.deepEqual(read.map((r) => r.deliveryId).sort(), jobs.map((j) => j.data.deliveryId).sort());
  await db.query(`DROP INDEX ${db.schema}.sellsy_events_stored_idx`);
  const again = (await all(reader.pages({ since: Date.now() - 60_000, until: null, ids: new Set() }))).flat();
  assert.equal(again.length, jobs.length);
});
