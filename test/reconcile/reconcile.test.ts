import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { loadConfig } from '../../src/config/config.ts';
import type { WebhookJobData } from '../../src/queue/contract.ts';
import { BullmqProducer } from '../../src/queue/producer.ts';
import { producerOptionsFrom } from '../../src/queue/producer-options.ts';
import { RecordSeen } from '../../src/queue/seen.ts';
import { type ReconcileRun, reconcile, type Tally } from '../../src/reconcile/reconcile.ts';
import { ReconcileState } from '../../src/reconcile/state.ts';
import { SellsyApi } from '../../src/sellsy/api.ts';
import { type FakeSellsy, fakeApiOptions, startFakeSellsy } from '../helpers/fake-sellsy.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

let redis: RedisServer;
let fake: FakeSellsy;
const closers: (() => Promise<unknown>)[] = [];
before(async () => {
  redis = await startRedis();
  fake = await startFakeSellsy();
});
after(async () => {
  for (const close of closers) await close();
  await fake?.close();
  await redis?.destroy();
});

const DAY = 24 * 3_600_000;

/** A reconcile set up as `backfill` sets it up, on a queue of its own; `fake` emptied of invoices and companies. */
async function setup() {
  for (const collection of ['invoices', 'companies']) {
    for (const o of fake.objectsOf(collection, null)) fake.remove(collection, String((o as { id: number }).id));
  }
  const config = loadConfig({ REDIS_URL: redis.url, QUEUE_NAME: `test-${randomBytes(4).toString('hex')}` });
  const producer = new BullmqProducer({ ...producerOptionsFrom(config), role: 'reconcile' });
  const queue = new Queue<WebhookJobData>(config.queueName, { connection: { url: redis.url } });
  closers.push(
    () => producer.close(),
    () => queue.close(),
  );
  await waitFor(() => producer.health().ready, 10_000, 'producer ready');
  const api = new SellsyApi(fakeApiOptions(fake));
  const deps = {
    accounts: [{ account: '929', api }],
    writer: producer,
    state: new ReconcileState(producer.client, config.queuePrefix, config.queueName),
    seen: RecordSeen.of(producer.client, config.queuePrefix, config.queueName),
  };
  const run = (over: Partial<ReconcileRun> = {}): Promise<Tally[]> =>
    reconcile(deps, {
      since: Date.now() - DAY,
      until: Date.now(),
      lookbackMs: 30 * DAY,
      types: ['invoices'],
      dryRun: false,
      backfill: false,
      ...over,
    });
  return { api, queue, run };
}

const invoice = (id: number, status: string) => ({
  id,
  number: `F-${id}`,
  status,
  created: new Date(Date.now() - 10 * DAY).toISOString(),
  date: '2026-11-20',
  amounts: { total_incl_tax: '120.00' },
  pdf_link: `https://example.invalid/${id}.pdf?token=${randomBytes(4).toString('hex')}`,
});

test('invoices: the first scan only records fingerprints; a status change between two scans is found, an unchanged invoice is not', async () => {
  const { queue, run } = await setup();
  fake.put('invoices', '1', invoice(1, 'due'));
  fake.put('invoices', '2', invoice(2, 'due'));
  const [first] = await run();
  assert.equal(first?.recorded, 2, 'first scan of the type: recorded without queueing');
  assert.equal(await queue.count(), 0);

  fake.put('invoices', '1', invoice(1, 'paid'));
  fake.put('invoices', '2', invoice(2, 'due')); // a new signed link, nothing else: not a change
  const [second] = await run();
  assert.equal(second?.changes, 1);
  assert.equal(second?.unchanged, 1);
  const jobs = await queue.getJobs(['wait']);
  assert.deepEqual(
    jobs.map((j) => `${j.name}:${j.data.event?.relatedId}`),
    ['invoice.reconciled:1'],
  );
  assert.match(String(JSON.parse(jobs[0]?.data.rawBody ?? '{}').fingerprint), /^[0-9a-f]{32}$/);

  const [third] = await run();
  assert.equal(third?.changes, 0, 'the change is recorded: a third scan finds nothing');
  assert.equal(await queue.count(), 1);
});

test('a 429 in the middle of a search is waited out and the run completes with every object', async () => {
  const { queue, run } = await setup();
  const updated = new Date(Date.now() - 3_600_000).toISOString();
  for (let id = 1; id <= 150; id++) fake.put('companies', String(id), { id, updated_at: updated });
  let armed = true;
  const started = Date.now();
  const [tally] = await run({
    types: ['companies'],
    onProgress: () => {
      // After the first page: the next call is refused, with the second's quota spent.
      if (armed) fake.failNext(1, 429, { 'X-Quota-Remaining-By-Second': '0' });
      armed = false;
    },
  });
  assert.equal(tally?.rateLimited, 1);
  assert.equal(tally?.queued, 150);
  assert.equal(await queue.count(), 150);
  assert.ok(Date.now() - started >= 900, 'it waited for the next quota second before asking again');
});

test('a search filter the collection does not support answers 400, as Sellsy does (invoices have no updated_at)', async () => {
  const { queue, api } = await setup();
  await assert.rejects(
    api.request('POST', '/invoices/search', { filters: { updated_at: { start: new Date(0).toISOString() } } }),
    /answered 400.*updated_at/,
  );
  assert.equal(await queue.count(), 0);
});

test('a run interrupted after its first page, run again, queues every change exactly once', async () => {
  const { queue, run } = await setup();
  const updated = new Date(Date.now() - 3_600_000).toISOString();
  for (let id = 1; id <= 250; id++) fake.put('companies', String(id), { id, updated_at: updated });
  const stop = new AbortController();
  await assert.rejects(run({ types: ['companies'], signal: stop.signal, onProgress: () => stop.abort() }));
  assert.equal(await queue.count(), 100, 'the first page was queued before the interruption');
  const [again] = await run({ types: ['companies'] });
  assert.equal(again?.alreadySeen, 100);
  assert.equal(again?.queued, 150);
  const ids = (await queue.getJobs(['wait'])).map((j) => j.data.event?.relatedId);
  assert.equal(ids.length, 250);
  assert.equal(new Set(ids).size, 250);
});
