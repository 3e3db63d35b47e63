/**
 * `replay --destination NAME --since T` with the PostgreSQL store: a new destination catches up with deliveries the
 * queue no longer keeps, read from the store, each once whatever the number of places that hold it. Real Redis, real
 * PostgreSQL (a schema per test), real workers and listener, destinations as local HTTP receivers whose requests are
 * checked with the `standardwebhooks` library.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, type TestContext, test } from 'node:test';
import type { Job } from 'bullmq';
import { Registry } from 'prom-client';
import { Webhook } from 'standardwebhooks';
import { replay } from '../../src/cli/replay.ts';
import { loadConfig } from '../../src/config/config.ts';
import { openEventStore } from '../../src/handlers/postgres.ts';
import { sign } from '../../src/sellsy/signature.ts';
import { delivery, silent, store } from '../helpers/event-store.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { tempSchema } from '../helpers/postgres.ts';
import { answerWith, type Receiver, startReceiver } from '../helpers/receiver.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';
import { KEY } from '../helpers/vectors.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, startTestWorker } from '../helpers/worker.ts';

const tempDir = useTempDirs('sellsy-replay-destination-');
const secrets = {
  ACCOUNTING_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
  WAREHOUSE_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
};

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.destroy();
});

/** accounting takes every event; the warehouse, when there, invoices and payments. */
function destinationsFile(accounting: Receiver, warehouse: Receiver | null): string {
  const lines = [
    'destinations:',
    '  - name: accounting',
    `    url: ${accounting.url}`,
    `    secret: \${ACCOUNTING_SECRET}`,
  ];
  if (warehouse !== null) {
    lines.push('  - name: warehouse', `    url: ${warehouse.url}`, `    secret: \${WAREHOUSE_SECRET}`);
    lines.push('    events: ["invoice.*", "payment.*"]');
  }
  const path = join(tempDir(), 'destinations.yaml');
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

async function receiver(t: TestContext): Promise<Receiver> {
  const r = await startReceiver();
  t.after(() => r.close());
  return r;
}

/** A listener and a worker storing into a fresh schema, each delivery signed and checked by the worker. */
async function setup(t: TestContext, accounting: Receiver) {
  const db = await tempSchema();
  t.after(() => db.drop());
  const common = {
    ...secrets,
    SELLSY_SIGN_KEY: KEY,
    SIGNATURE_CHECK: 'worker',
    DATABASE_URL: db.url,
    DATABASE_SCHEMA: db.schema,
    JOB_BACKOFF_MS: '20',
  };
  const listener = await startTestListener(redis.url, common);
  t.after(() => listener.close());
  await untilReady(listener);
  const worker = await startTestWorker(listener, { ...common, DESTINATIONS_FILE: destinationsFile(accounting, null) });
  t.after(() => worker.close());
  return { db, listener, worker, common };
}

/** Workers restarted with the warehouse added, and the configuration `replay` runs with. */
async function addWarehouse(
  t: TestContext,
  listener: TestListener,
  common: Record<string, string>,
  accounting: Receiver,
  warehouse: Receiver,
) {
  const env = { ...common, DESTINATIONS_FILE: destinationsFile(accounting, warehouse) };
  const worker = await startTestWorker(listener, env, undefined, new Registry());
  t.after(() => worker.close());
  return loadConfig({ ...env, REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName });
}

function body(type: string, event: string, id: number): string {
  return JSON.stringify({ eventType: 'x', event, relatedtype: type, relatedid: String(id), corpid: '929' });
}

async function deliver(listener: TestListener, text: string): Promise<string> {
  const res = await post(listener.url, text, { ...json, 'x-webhook-signature': sign(KEY, text) });
  assert.equal(res.status, 200);
  return res.body.jobId as string;
}

async function settled(listener: TestListener, jobId: string, state: 'completed' | 'failed'): Promise<Job> {
  await waitFor(async () => (await listener.queue.getJobState(jobId)) === state, 20_000, `job ${jobId} ${state}`);
  const job = await listener.queue.getJob(jobId);
  assert.ok(job);
  return job;
}

/** The forward bodies a receiver got, each request verified with `secret`, by webhook-id. */
function verified(target: Receiver, secret: string): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  for (const r of target.received) {
    const headers = Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, String(v)]));
    const message = new Webhook(secret).verify(r.body, headers) as Record<string, unknown>;
    assert.equal(message.deliveryId, headers['webhook-id']);
    assert.ok(!out.has(headers['webhook-id'] as string), `${headers['webhook-id']} received once`);
    out.set(headers['webhook-id'] as string, message);
  }
  return out;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('replay --destination --since brings a new destination up to date from the PostgreSQL store, within --since/--until, each delivery once', async (t) => {
  const accounting = await receiver(t);
  const warehouse = await receiver(t);
  const { db, listener, worker, common } = await setup(t, accounting);

  const old = await deliver(listener, body('invoice', 'step', 500));
  await settled(listener, old, 'completed');
  await pause(20);
  const since = Date.now();
  const storedOnly = [
    await deliver(listener, body('invoice', 'step', 501)),
    await deliver(listener, body('payment', 'created', 502)),
  ];
  const notTaken = await deliver(listener, body('company', 'updated', 503)); // the warehouse does not take it
  const alsoKept = await deliver(listener, body('invoice', 'created', 504));
  for (const id of [...storedOnly, notTaken, alsoKept]) await settled(listener, id, 'completed');
  // Refused by accounting: a dead letter of accounting's (its retry job), the event's job completed and the delivery
  // stored all the same (postgres runs before the fan-out).
  accounting.answer = answerWith(422, 'no');
  const dead = await deliver(listener, body('invoice', 'step', 506));
  await settled(listener, dead, 'completed');
  await settled(listener, `${dead}-to-accounting`, 'failed');
  accounting.answer = answerWith(200);
  await pause(20);
  const until = Date.now();
  await pause(20);
  const later = await deliver(listener, body('invoice', 'step', 505));
  await settled(listener, later, 'completed');
  assert.equal(accounting.received.length, 7);
  assert.equal(
    Number((await db.query(`SELECT count(*) AS n FROM ${db.schema}.sellsy_events`))[0]?.n),
    7,
    'every delivery stored',
  );
  // The queue no longer keeps these two: only the store has them.
  for (const id of storedOnly) await (await listener.queue.getJob(id))?.remove();
  await worker.close();

  const config = await addWarehouse(t, listener, common, accounting, warehouse);
  const filter = { ids: new Set<string>(), name: null, since, until, destination: 'warehouse' };
  const dry: string[] = [];
  const listed = await replay(config, filter, true, (l) => dry.push(l));
  assert.equal(listed.matched, 4, dry.join('\n'));
  const sourceOf = (id: string) => {
    const lines = dry.filter((l) => l.includes(id));
    assert.equal(lines.length, 1, `${id} listed once:\n${dry.join('\n')}`);
    return lines[0] as string;
  };
  for (const id of storedOnly) assert.match(sourceOf(id), /\(postgres /);
  assert.match(sourceOf(alsoKept), /\(kept job /);
  // Accounting's dead letter is not the warehouse's: the warehouse gets the delivery from its kept job.
  assert.match(sourceOf(dead), /\(kept job /);
  for (const id of [old, notTaken, later]) assert.ok(!dry.some((l) => l.includes(id)), `${id} not listed`);
  assert.equal(warehouse.received.length, 0, 'a dry run sends nothing');

  const result = await replay(config, filter, false, () => undefined);
  assert.deepEqual(result, { matched: 4, replayed: 4, skipped: 0 });
  await waitFor(async () => warehouse.received.length >= 4, 20_000, 'warehouse caught up');
  await pause(500); // time for a second copy to arrive, were one queued
  const got = verified(warehouse, secrets.WAREHOUSE_SECRET);
  assert.deepEqual([...got.keys()].sort(), [...storedOnly, alsoKept, dead].sort());
  // A delivery rebuilt from its row is the one accounting had: same body, event, times, account and signature status
  // (the worker verified its stored signature header again, or it would have refused it).
  const had = verified(accounting, secrets.ACCOUNTING_SECRET);
  for (const id of storedOnly) assert.deepEqual(got.get(id), had.get(id));
  assert.equal(got.get(storedOnly[0] as string)?.signature, 'unchecked');
  assert.equal(accounting.received.length, 7, 'nothing sent again to the destination that had them');

  // A row stored before the store kept signature headers, queued unchecked: reported, not queued (a worker would
  // refuse it as unsigned).
  await db.query(`UPDATE ${db.schema}.sellsy_events SET signature_header = NULL WHERE delivery_id = $1`, [
    storedOnly[0],
  ]);
  const lines: string[] = [];
  const old1 = await replay(config, { ...filter, ids: new Set([storedOnly[0] as string]) }, false, (l) =>
    lines.push(l),
  );
  assert.deepEqual(old1, { matched: 0, replayed: 0, skipped: 1 });
  assert.match(lines.join('\n'), /signature header/);
});

test('more than one page of stored deliveries: every one sent once, listed in the order they were stored', async (t) => {
  const accounting = await receiver(t);
  const warehouse = await receiver(t);
  const { db, listener, worker, common } = await setup(t, accounting);
  await worker.close();
  // Stored by the postgres handler itself, many at once (group commit: rows of one statement share stored_at).
  const since = Date.now() - 1000;
  const events = await openEventStore({ url: db.url, schema: db.schema }, silent);
  const count = 520;
  const jobs = Array.from({ length: count }, (_, i) => delivery(10_000 + i, body('invoice', 'step', 10_000 + i)));
  try {
    await Promise.all(jobs.map((job) => store(events, job)));
  } finally {
    await events.close();
  }

  const config = await addWarehouse(t, listener, common, accounting, warehouse);
  const filter = { ids: new Set<string>(), name: null, since, until: null, destination: 'warehouse' };
  const dry: string[] = [];
  assert.equal((await replay(config, filter, true, (l) => dry.push(l))).matched, count);
  const stored = dry.map((l) => Date.parse(/stored (\S+)\)$/.exec(l)?.[1] ?? ''));
  assert.ok(
    stored.every((ms, i) => !Number.isNaN(ms) && (i === 0 || ms >= (stored[i - 1] as number))),
    'in storing order',
  );
  assert.ok(new Set(stored).size < count, 'some rows share a storing time: the pages break ties by delivery id');

  const result = await replay(config, filter, false, () => undefined);
  assert.equal(result.replayed, count);
  await waitFor(async () => warehouse.received.length >= count, 60_000, 'warehouse caught up');
  await pause(500);
  const got = verified(warehouse, secrets.WAREHOUSE_SECRET);
  assert.deepEqual([...got.keys()].sort(), jobs.map((j) => j.data.deliveryId).sort());
  assert.equal(accounting.received.length, 0);
});
