import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PermanentError } from '../../src/errors.ts';
import { openEventStore } from '../../src/handlers/postgres.ts';
import { createLogger } from '../../src/logger.ts';
import { delivery, only, relay, rows, silent, store, withStore } from '../helpers/event-store.ts';
import { LogCapture } from '../helpers/listener.ts';
import { type TempSchema, tempSchema } from '../helpers/postgres.ts';
import { waitFor } from '../helpers/wait.ts';

const EVENT_BODY =
  '{"eventType":"docslog","event":"step","relatedtype":"invoice","relatedid":"42","ownertype":"staff",' +
  '"ownerid":"7","corpid":"929","timestamp":"1767225600","note":"Société Générale — 10 € · 日本 · 😀"}';

test('opening the store creates the schema, the events table with its columns and index, and records migration 1', async (t) => {
  const { db } = await withStore(t);
  const columns = await db.query(
    `SELECT column_name, data_type, is_nullable FROM information_schema.columns
     WHERE table_schema = $1 AND table_name = 'sellsy_events' ORDER BY ordinal_position`,
    [db.schema],
  );
  assert.deepEqual(
    columns.map((c) => `${c.column_name} ${c.data_type}${c.is_nullable === 'NO' ? ' not null' : ''}`),
    [
      'delivery_id uuid not null',
      'dedup_key text not null',
      'job_name text not null',
      'account text',
      'event_type text',
      'event text',
      'related_type text',
      'related_id text',
      'owner_type text',
      'owner_id text',
      'event_timestamp timestamp with time zone',
      'received_at timestamp with time zone not null',
      'stored_at timestamp with time zone not null',
      'content_type text',
      'raw_body text not null',
      'raw_body_base64 text',
      'event_json jsonb',
      'parse_problem text',
      'signature_status text not null',
      'source text not null',
      'signature_header text',
      'signature_scope text',
    ],
  );
  const indexes = (
    await db.query(`SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'sellsy_events'`, [db.schema])
  ).map((r) => String(r.indexdef));
  assert.ok(
    indexes.some((d) => d.includes('UNIQUE') && d.includes('(delivery_id)')),
    'primary key on delivery_id',
  );
  assert.ok(
    indexes.some((d) => d.includes('UNIQUE') && d.includes('(dedup_key)')),
    'dedup_key is unique',
  );
  assert.ok(
    indexes.some((d) => d.includes('(account, related_type, related_id)')),
    'record index',
  );
  assert.ok(
    indexes.some((d) => d.includes('(stored_at, delivery_id)')),
    'index in storing order, for replay --destination --since',
  );
  const migrations = await db.query(
    `SELECT version, applied_at FROM ${db.schema}.sellsy_webhooks_migrations ORDER BY version`,
  );
  assert.deepEqual(
    migrations.map((m) => m.version),
    [1, 2, 3],
  );
  assert.ok(migrations[0]?.applied_at instanceof Date);
});

test('opening the store a second time, or migrating again, changes nothing and keeps the rows', async (t) => {
  const { db, store: first } = await withStore(t);
  await store(first, delivery(1, EVENT_BODY));
  await first.close();
  await first.close();
  const second = await openEventStore({ url: db.url, schema: db.schema }, silent);
  t.after(() => second.close());
  await second.migrate();
  const migrations = await db.query(`SELECT version FROM ${db.schema}.sellsy_webhooks_migrations ORDER BY version`);
  assert.deepEqual(
    migrations.map((m) => m.version),
    [1, 2, 3],
  );
  assert.equal((await rows(db)).length, 1);
});

test('several stores opening the same new schema at the same time all succeed and migrate once', async (t) => {
  const db = await tempSchema();
  t.after(() => db.drop());
  const stores = await Promise.all(
    Array.from({ length: 4 }, () => openEventStore({ url: db.url, schema: db.schema }, silent)),
  );
  t.after(() => Promise.all(stores.map((s) => s.close())));
  const migrations = await db.query(`SELECT version FROM ${db.schema}.sellsy_webhooks_migrations`);
  assert.equal(migrations.length, 3);
  await Promise.all(stores.map((s, i) => store(s, delivery(i + 1, EVENT_BODY.replace('"42"', `"${i + 1}"`)))));
  assert.equal((await rows(db)).length, 4);
});

/**
 * The store as a worker before migration 3 left it (migrations 1 and 2 applied), with `count` rows stored over the
 * last `count` milliseconds.
 */
async function versionTwoStore(db: TempSchema, count: number): Promise<void> {
  const s = db.schema;
  await db.query(`CREATE SCHEMA ${s}`);
  await db.query(
    `CREATE TABLE ${s}.sellsy_webhooks_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
  );
  await db.query(`INSERT INTO ${s}.sellsy_webhooks_migrations (version) VALUES (1), (2)`);
  await db.query(
    `CREATE TABLE ${s}.sellsy_events (delivery_id uuid PRIMARY KEY, dedup_key text NOT NULL UNIQUE,
      job_name text NOT NULL, account text, event_type text, event text, related_type text, related_id text,
      owner_type text, owner_id text, event_timestamp timestamptz, received_at timestamptz NOT NULL,
      stored_at timestamptz NOT NULL DEFAULT now(), content_type text, raw_body text NOT NULL, raw_body_base64 text,
      event_json jsonb, parse_problem text, signature_status text NOT NULL, source text NOT NULL DEFAULT 'webhook')`,
  );
  await db.query(`CREATE INDEX sellsy_events_record_idx ON ${s}.sellsy_events (account, related_type, related_id)`);
  await db.query(
    `INSERT INTO ${s}.sellsy_events (delivery_id, dedup_key, job_name, received_at, stored_at, raw_body, signature_status)
     SELECT gen_random_uuid(), md5(i::text), 'invoice.step', now(), now() - (i || ' ms')::interval, '{}', 'verified'
     FROM generate_series(1, $1::int) i`,
    [count],
  );
}

/** The definition and validity of the index `replay --destination --since` reads by, or undefined when absent. */
async function storedIndex(db: TempSchema): Promise<{ def: string; valid: boolean } | undefined> {
  const found = await db.query<{ def: string; valid: boolean }>(
    `SELECT pg_get_indexdef(i.indexrelid) AS def, i.indisvalid AS valid FROM pg_index i
     WHERE i.indexrelid = to_regclass($1)`,
    [`${db.schema}.sellsy_events_stored_idx`],
  );
  return found[0];
}

test('regression: migration 3 on a large table under a statement_timeout of the connection succeeds and builds its index', async (t) => {
  const db = await tempSchema();
  t.after(() => db.drop());
  // Enough rows that building the index takes longer than the timeout (inside the migration's transaction, it failed
  // the migration and so the start).
  await versionTwoStore(db, 400_000);
  const url = new URL(db.url);
  // As ALTER ROLE … SET statement_timeout would: every statement of the store's connections, by default.
  url.searchParams.set('options', '-c statement_timeout=100');
  const capture = new LogCapture();
  const opened = await openEventStore({ url: url.href, schema: db.schema }, createLogger('info', capture));
  t.after(() => opened.close());
  const migrations = await db.query(`SELECT version FROM ${db.schema}.sellsy_webhooks_migrations ORDER BY version`);
  assert.deepEqual(
    migrations.map((m) => m.version),
    [1, 2, 3],
  );
  const index = await storedIndex(db);
  assert.ok(index?.def.includes('(stored_at, delivery_id)'), index?.def);
  assert.equal(index?.valid, true);
  assert.equal(capture.lines.filter((l) => l.msg === 'postgres index built').length, 1);
  const job = delivery(1, EVENT_BODY);
  await store(opened, job);
  const stored = await db.query(`SELECT signature_status FROM ${db.schema}.sellsy_events WHERE delivery_id = $1`, [
    job.data.deliveryId,
  ]);
  assert.equal(stored.length, 1);
});

test('an index a build left unfinished (not valid) is dropped and built again at start', async (t) => {
  const db = await tempSchema();
  t.after(() => db.drop());
  await versionTwoStore(db, 1000);
  // A CONCURRENTLY build that fails leaves its index behind, not valid: here a unique one on duplicate values.
  await assert.rejects(
    db.query(`CREATE UNIQUE INDEX CONCURRENTLY sellsy_events_stored_idx ON ${db.schema}.sellsy_events (job_name)`),
    /could not create unique index/,
  );
  assert.equal((await storedIndex(db))?.valid, false);
  const capture = new LogCapture();
  const opened = await openEventStore({ url: db.url, schema: db.schema }, createLogger('info', capture));
  t.after(() => opened.close());
  const index = await storedIndex(db);
  assert.ok(index?.def.includes('(stored_at, delivery_id)'), index?.def);
  assert.ok(!index?.def.includes('UNIQUE'), index?.def);
  assert.equal(index?.valid, true);
  assert.ok(capture.lines.some((l) => l.msg === 'postgres index left unfinished by a build: rebuilding'));
});

test('several workers migrating a large table at the same time build its index once, and all start', async (t) => {
  const db = await tempSchema();
  t.after(() => db.drop());
  await versionTwoStore(db, 200_000);
  const capture = new LogCapture();
  const log = createLogger('info', capture);
  const stores = await Promise.all(
    Array.from({ length: 3 }, () => openEventStore({ url: db.url, schema: db.schema }, log)),
  );
  t.after(() => Promise.all(stores.map((s) => s.close())));
  assert.equal(capture.lines.filter((l) => l.msg === 'postgres index built').length, 1);
  assert.equal(capture.lines.filter((l) => l.msg === 'postgres migration applied').length, 1);
  assert.equal((await storedIndex(db))?.valid, true);
});

test('a delivery is stored with its raw body exact, its parsed fields and its timestamps', async (t) => {
  const { db, store: s } = await withStore(t);
  const job = delivery(1, EVENT_BODY);
  const before = Date.now();
  await store(s, job);
  const row = await only(db);
  assert.equal(row.raw_body, EVENT_BODY);
  assert.equal(row.raw_body_base64, null);
  assert.equal(row.delivery_id, job.data.deliveryId);
  assert.equal(row.dedup_key, job.data.dedupKey);
  assert.equal(row.job_name, 'invoice.step');
  assert.equal(row.account, '929');
  assert.equal(row.event_type, 'docslog');
  assert.equal(row.event, 'step');
  assert.equal(row.related_type, 'invoice');
  assert.equal(row.related_id, '42');
  assert.equal(row.owner_type, 'staff');
  assert.equal(row.owner_id, '7');
  assert.deepEqual(row.event_timestamp, new Date('2026-01-01T00:00:00Z'));
  assert.deepEqual(row.received_at, new Date(job.data.receivedAt));
  assert.ok(row.stored_at instanceof Date && Math.abs(row.stored_at.getTime() - before) < 60_000, 'stored_at is now');
  assert.equal(row.content_type, 'application/json');
  assert.deepEqual(row.event_json, JSON.parse(JSON.stringify(job.data.event)));
  assert.equal((row.event_json as { extra: { note: string } }).extra.note, 'Société Générale — 10 € · 日本 · 😀');
  assert.equal(row.parse_problem, null);
  assert.equal(row.signature_status, 'not_configured');
  assert.equal(row.signature_header, null);
  assert.equal(row.signature_scope, 'body');
  assert.equal(row.source, 'webhook', 'a job without source (written before the field) is a webhook delivery');
});

test('a synthetic delivery of reconciliation is stored with its source', async (t) => {
  const { db, store: s } = await withStore(t);
  const job = delivery(1, EVENT_BODY);
  job.data.source = 'reconcile';
  job.data.signature = { status: 'internal', header: null, scope: 'body' };
  delete job.data.request;
  await store(s, job);
  const row = await only(db);
  assert.equal(row.source, 'reconcile');
  assert.equal(row.signature_status, 'internal');
});

test('a body that is not UTF-8 keeps its exact bytes in raw_body_base64', async (t) => {
  const { db, store: s } = await withStore(t);
  const bytes = Buffer.concat([
    Buffer.from('{"relatedtype":"invoice","event":"step","relatedid":"43","corpid":"929","name":"Soci'),
    Buffer.from([0xe9, 0xff]),
    Buffer.from('t"}'),
  ]);
  const job = delivery(1, bytes);
  assert.ok(job.data.rawBodyBase64 !== undefined, 'the fixture is not UTF-8');
  await store(s, job);
  const row = await only(db);
  assert.equal(row.raw_body, job.data.rawBody);
  assert.deepEqual(Buffer.from(String(row.raw_body_base64), 'base64'), bytes);
  assert.equal(row.related_id, '43');
});

test('regression: a NUL in the body or in a parsed string is stored, not failed for good', async (t) => {
  const { db, store: s } = await withStore(t);
  const escaped = delivery(
    1,
    '{"relatedtype":"invoice","event":"step","relatedid":"44","corpid":"929","n\\u0000":"a\\u0000b"}',
  );
  const raw = Buffer.from('{"relatedtype":"invoice","event":"step","x":"a\u0000b"}', 'utf8');
  const literal = delivery(2, raw);
  await store(s, escaped);
  await store(s, literal);
  const [first, second] = await rows(db);
  assert.ok(first && second, 'both deliveries are stored');
  assert.equal(first.raw_body, escaped.data.rawBody);
  assert.deepEqual((first.event_json as { extra: unknown }).extra, { 'n\uFFFD': 'a\uFFFDb' });
  assert.equal(second.job_name, 'unknown');
  assert.equal(second.parse_problem, 'invalid_json');
  assert.deepEqual(Buffer.from(String(second.raw_body_base64), 'base64'), raw);
});

test('regression: a NUL or a lone surrogate in account, related_id or the parsed event is stored sanitised, not failed for good', async (t) => {
  const { db, store: s } = await withStore(t);
  const body =
    '{"relatedtype":"invoice","event":"step","relatedid":"4\\u00005","corpid":"9\\u00002","note":"a\\ud800b","\\udc00k":"v"}';
  const job = delivery(1, body);
  assert.equal(job.data.account, '9\u00002');
  assert.equal(job.data.event?.relatedId, '4\u00005');
  await store(s, job);
  const row = await only(db);
  assert.equal(row.account, '9\uFFFD2');
  assert.equal(row.related_id, '4\uFFFD5');
  assert.equal(row.job_name, 'invoice.step');
  assert.deepEqual((row.event_json as { extra: unknown }).extra, { note: 'a\uFFFDb', '\uFFFDk': 'v' });
  assert.equal(row.raw_body, body, 'the raw body is kept exactly');
  assert.equal(row.raw_body_base64, null);
});

test('a NUL or a lone surrogate in the other parsed fields (type, event, owner) is stored sanitised', async (t) => {
  const { db, store: s } = await withStore(t);
  const job = delivery(
    1,
    '{"relatedtype":"inv\\u0000oice","event":"st\\u0000ep","relatedid":"1","ownertype":"\\ud83d"}',
  );
  await store(s, job);
  const row = await only(db);
  assert.equal(row.job_name, 'unknown');
  assert.equal(row.related_type, 'inv\uFFFDoice');
  assert.equal(row.event, 'st\uFFFDep');
  assert.equal(row.owner_type, '\uFFFD');
});

test('a timestamp that is not unix seconds in range is stored as null', async (t) => {
  const { db, store: s } = await withStore(t);
  const values = ['yesterday', '', '0x10', '1e30', '99999999999999'];
  for (const [i, value] of values.entries()) {
    await store(
      s,
      delivery(i + 1, `{"relatedtype":"invoice","event":"step","relatedid":"${i}","timestamp":"${value}"}`),
    );
  }
  await store(s, delivery(9, '{"relatedtype":"invoice","event":"step","relatedid":"9","timestamp":1767225600}'));
  const all = await rows(db);
  assert.deepEqual(
    all.map((r) => r.event_timestamp),
    [null, null, null, null, null, new Date('2026-01-01T00:00:00Z')],
  );
});

test('the same job handled twice stores one row', async (t) => {
  const { db, store: s } = await withStore(t);
  const job = delivery(1, EVENT_BODY);
  await store(s, job);
  await store(s, job, { attempt: 2 });
  assert.equal((await rows(db)).length, 1);
});

test('the same delivery received twice (same dedup key, new delivery id) stores one row, the first', async (t) => {
  const { db, store: s } = await withStore(t);
  const first = delivery(1, EVENT_BODY);
  const again = delivery(2, EVENT_BODY);
  assert.equal(again.data.dedupKey, first.data.dedupKey);
  await store(s, first);
  await store(s, again);
  assert.equal((await only(db)).delivery_id, first.data.deliveryId);
});

test('an unknown delivery (no event, a parse problem) is stored', async (t) => {
  const { db, store: s } = await withStore(t);
  const job = delivery(1, 'hello, Sellsy', 'text/plain');
  assert.equal(job.name, 'unknown');
  assert.equal(job.data.event, null);
  await store(s, job);
  const row = await only(db);
  assert.equal(row.job_name, 'unknown');
  assert.equal(row.raw_body, 'hello, Sellsy');
  assert.equal(row.content_type, 'text/plain');
  assert.equal(row.parse_problem, 'unsupported_content_type');
  assert.equal(row.account, null);
  assert.equal(row.event_type, null);
  assert.equal(row.related_id, null);
  assert.equal(row.event_timestamp, null);
  assert.equal(row.event_json, null);
});

test('a data error no retry can fix is a PermanentError', async (t) => {
  const { store: s } = await withStore(t);
  const badId = delivery(1, EVENT_BODY);
  badId.data.deliveryId = 'not-a-uuid';
  await assert.rejects(store(s, badId), (err: unknown) => {
    assert.ok(err instanceof PermanentError);
    assert.equal(err.code, 'SW_ERR_PERMANENT');
    assert.equal((err.cause as { code?: string }).code, '22P02');
    return true;
  });
  const badTime = delivery(2, EVENT_BODY);
  badTime.data.receivedAt = 'not a time';
  await assert.rejects(store(s, badTime), PermanentError);
});

test('a lost connection is logged when idle and is an ordinary (retried) error when storing', async (t) => {
  const db = await tempSchema();
  t.after(() => db.drop());
  const proxy = await relay(db.url);
  const capture = new LogCapture();
  const s = await openEventStore({ url: proxy.url, schema: db.schema }, createLogger('info', capture));
  t.after(() => s.close());
  await store(s, delivery(1, EVENT_BODY));
  await proxy.cut();
  const logged = () => capture.lines.some((l) => l.msg === 'postgres idle connection error');
  await waitFor(logged, 5000, 'the idle connection error to be logged', 10);
  await assert.rejects(store(s, delivery(2, EVENT_BODY.replace('"42"', '"43"'))), (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.ok(!(err instanceof PermanentError), 'a connection error is retried');
    return true;
  });
  assert.equal((await rows(db)).length, 1);
});
