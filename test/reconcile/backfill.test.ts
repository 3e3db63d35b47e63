import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { type Job, Queue } from 'bullmq';
import type { WebhookJobData } from '../../src/queue/contract.ts';
import { recordKey } from '../../src/queue/records.ts';
import { runDispatch } from '../helpers/dispatch.ts';
import { type FakeSellsy, startFakeSellsy } from '../helpers/fake-sellsy.ts';
import { post, startTestListener, untilReady } from '../helpers/listener.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, startTestWorker } from '../helpers/worker.ts';

let redis: RedisServer;
const fakes: FakeSellsy[] = [];
const queues: Queue[] = [];
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await Promise.all(queues.map((q) => q.close()));
  await Promise.all(fakes.map((f) => f.close()));
  await redis?.destroy();
});

const HOUR = 3_600_000;
const ago = (ms: number) => new Date(Date.now() - ms).toISOString();

async function setup(queueName = `test-${randomBytes(4).toString('hex')}`) {
  const fake = await startFakeSellsy();
  fakes.push(fake);
  const queue = new Queue<WebhookJobData>(queueName, { connection: { url: redis.url } });
  queues.push(queue);
  const env = {
    REDIS_URL: redis.url,
    QUEUE_NAME: queueName,
    SELLSY_CLIENT_ID: fake.clientId,
    SELLSY_CLIENT_SECRET: fake.clientSecret,
    SELLSY_API_URL: fake.apiUrl,
    SELLSY_TOKEN_URL: fake.tokenUrl,
    SELLSY_ACCOUNT_ID: '929',
    LOG_LEVEL: 'silent',
  };
  const jobs = async () =>
    (await queue.getJobs(['wait', 'active', 'completed', 'failed', 'delayed', 'prioritized'])) as Job<WebhookJobData>[];
  return { fake, queue, env, jobs };
}

/** Three companies and two contacts changed within the last day, one of each before it; two invoices of the day. */
function seedChanges(fake: FakeSellsy): void {
  for (const id of [1, 2, 3]) fake.put('companies', String(id), { id, name: `c${id}`, updated_at: ago(id * HOUR) });
  fake.put('companies', '4', { id: 4, name: 'old', updated_at: ago(48 * HOUR) });
  for (const id of [10, 11]) fake.put('contacts', String(id), { id, updated: ago(2 * HOUR) });
  fake.put('contacts', '12', { id: 12, updated: ago(72 * HOUR) });
  for (const id of [20, 21]) {
    fake.put('invoices', String(id), { id, status: 'due', created: ago(5 * HOUR), amounts: { total: '10.00' } });
  }
}

const names = (jobs: Job<WebhookJobData>[]) => jobs.map((j) => `${j.name}:${j.data.event?.relatedId}`).sort();

test('backfill queues one synthetic delivery per change of companies, contacts and invoices, and nothing new when run again', async () => {
  const { fake, env, jobs } = await setup();
  seedChanges(fake);
  const args = ['backfill', '--since', '24h', '--types', 'companies,contacts,invoices'];
  const first = await runDispatch(args, env);
  assert.equal(first.status, 0, first.stderr);
  const queued = await jobs();
  assert.deepEqual(names(queued), [
    'invoice.reconciled:20',
    'invoice.reconciled:21',
    'people.reconciled:10',
    'people.reconciled:11',
    'third.reconciled:1',
    'third.reconciled:2',
    'third.reconciled:3',
  ]);
  const company = queued.find((j) => j.name === 'third.reconciled' && j.data.event?.relatedId === '1');
  assert.ok(company);
  const { data } = company;
  assert.equal(data.source, 'reconcile');
  assert.equal(data.signature.status, 'internal');
  assert.equal(data.request, undefined, 'no request fields');
  assert.equal(data.contentType, 'application/json');
  assert.equal(data.account, '929');
  assert.equal(data.event?.relatedType, 'third');
  assert.equal(data.event?.event, 'reconciled');
  assert.equal(data.event?.corpId, '929');
  const body = JSON.parse(data.rawBody) as Record<string, unknown>;
  assert.equal(body.collection, 'companies');
  const stored = fake.objectsOf('companies', null).find((o) => (o as { id: number }).id === 1) as {
    updated_at: string;
  };
  assert.equal(body.changedAt, stored.updated_at, "the change time is the object's updated_at");
  assert.match(first.stdout, /companies \(account 929\): found 3, queued 3, already seen 0/);
  assert.match(first.stdout, /invoices \(account 929\): found 2, queued 2, already seen 0/);
  assert.match(first.stdout, /total: found 7, queued 7, already seen 0 · API calls 3, quota left 600\/minute/);

  const second = await runDispatch(args, env);
  assert.equal(second.status, 0, second.stderr);
  assert.equal((await jobs()).length, 7, 'the second run queues nothing new');
  assert.match(second.stdout, /companies \(account 929\): found 3, queued 0, already seen 3/);
  assert.match(second.stdout, /invoices \(account 929\): found 2, queued 0, already seen 0, unchanged 2/);
});

test('backfill --dry-run queues nothing and records nothing: the real run after it queues every change', async () => {
  const { fake, env, jobs } = await setup();
  seedChanges(fake);
  const dry = await runDispatch(['backfill', '--since', '24h', '--dry-run'], env, { isTTY: true });
  assert.equal(dry.status, 0, dry.stderr);
  assert.match(
    dry.stdout,
    /\rcontacts \(account 929\): found 2, queued 0, already seen 0 · API calls \d+, quota left 600\/minute, 100000\/day/,
    'on a terminal, a progress line after each page',
  );
  assert.match(dry.stdout, /dry run: nothing is queued/);
  assert.match(dry.stdout, /total: found 7, would queue 7/);
  assert.equal((await jobs()).length, 0);
  const real = await runDispatch(['backfill', '--since', '24h'], env);
  assert.equal(real.status, 0, real.stderr);
  assert.equal((await jobs()).length, 7);
});

test('backfill reads past a page boundary: 250 changed companies make 250 jobs in 3 searches', async () => {
  const { fake, env, jobs } = await setup();
  for (let id = 1; id <= 250; id++) fake.put('companies', String(id), { id, updated_at: ago(HOUR + id * 1000) });
  const result = await runDispatch(['backfill', '--since', '24h', '--types', 'companies'], env);
  assert.equal(result.status, 0, result.stderr);
  const ids = new Set((await jobs()).map((j) => j.data.event?.relatedId));
  assert.equal(ids.size, 250);
  const searches = fake.apiRequests().filter((r) => r.path.startsWith('/v2/companies/search'));
  assert.equal(searches.length, 3);
  assert.ok(!searches[0]?.path.includes('offset='), 'the first page has no offset');
  assert.ok(searches[1]?.path.includes('offset='), 'the next pages pass the seek offset back');
});

test('a company whose webhook was received after its change is not queued; one changed after its webhook is', async () => {
  const listener = await startTestListener(redis.url);
  await untilReady(listener);
  const worker = await startTestWorker(listener, { RECORD_ORDER: 'off' });
  try {
    const { fake, env, jobs } = await setup(listener.config.queueName);
    fake.put('companies', '5', { id: 5, updated_at: ago(HOUR) });
    for (const id of ['5', '6']) {
      const body = JSON.stringify({
        eventType: 'thirdlog',
        event: 'updated',
        relatedtype: 'client',
        relatedid: id,
        corpid: '929',
        timestamp: '1',
      });
      assert.equal((await post(listener.url, body, json)).status, 200);
    }
    await waitFor(async () => (await listener.queue.getCompletedCount()) === 2, 15_000, 'both webhooks handled');
    fake.put('companies', '6', { id: 6, updated_at: new Date().toISOString() });
    const result = await runDispatch(['backfill', '--since', '24h', '--types', 'companies'], env);
    assert.equal(result.status, 0, result.stderr);
    const synthetic = (await jobs()).filter((j) => j.data.source === 'reconcile');
    assert.deepEqual(names(synthetic), ['third.reconciled:6']);
    assert.match(result.stdout, /companies \(account 929\): found 2, queued 1, already seen 1/);
    assert.equal(
      recordKey('929', 'companies', '5'),
      '929:companies:5',
      'a client webhook and a company are one record',
    );
  } finally {
    await worker.close();
    await listener.close();
  }
});

test('backfill without an account for the single API client exits 78 and says to set SELLSY_ACCOUNT_ID', async () => {
  const { env } = await setup();
  const { SELLSY_ACCOUNT_ID: _, ...rest } = env;
  const result = await runDispatch(['backfill', '--since', '1h'], rest);
  assert.equal(result.status, 78);
  assert.match(result.stderr, /SELLSY_ACCOUNT_ID: backfill attributes the changes/);
});

test('workers run synthetic deliveries through the record stage like webhooks: a *.reconciled handler sees each change once', async () => {
  const listener = await startTestListener(redis.url);
  await untilReady(listener);
  const seen: string[] = [];
  const worker = await startTestWorker(
    listener,
    { RECORD_ORDER: 'latest' },
    {
      '*.reconciled': async (event, context) => {
        seen.push(`${event?.relatedType}:${event?.relatedId}:${context.data.source}:${context.data.signature.status}`);
      },
    },
  );
  try {
    const { fake, env } = await setup(listener.config.queueName);
    fake.put('contacts', '10', { id: 10, updated: ago(HOUR) });
    fake.put('companies', '1', { id: 1, updated_at: ago(HOUR) });
    const result = await runDispatch(['backfill', '--since', '24h', '--types', 'companies,contacts'], env);
    assert.equal(result.status, 0, result.stderr);
    await waitFor(() => seen.length === 2, 15_000, 'both synthetic deliveries handled');
    assert.deepEqual(seen.sort(), ['people:10:reconcile:internal', 'third:1:reconcile:internal']);
    assert.equal(await listener.queue.getFailedCount(), 0, 'none refused');
  } finally {
    await worker.close();
    await listener.close();
  }
});

test('with SELLSY_ACCOUNT_CREDENTIALS each account is read with its own client and its changes attributed to it', async () => {
  const { fake, env, jobs } = await setup();
  fake.put('companies', '1', { id: 1, updated_at: ago(HOUR) });
  fake.addAccount('other-id', 'other-secret').put('companies', '1', { id: 1, updated_at: ago(2 * HOUR) });
  const { SELLSY_ACCOUNT_ID: _, SELLSY_CLIENT_ID: __, SELLSY_CLIENT_SECRET: ___, ...rest } = env;
  const credentials = {
    '929': { clientId: fake.clientId, clientSecret: fake.clientSecret },
    '930': { clientId: 'other-id', clientSecret: 'other-secret' },
  };
  const result = await runDispatch(['backfill', '--since', '24h', '--types', 'companies'], {
    ...rest,
    SELLSY_ACCOUNT_CREDENTIALS: JSON.stringify(credentials),
  });
  assert.equal(result.status, 0, result.stderr);
  const byAccount = (await jobs()).map((j) => `${j.data.account}:${j.data.event?.relatedId}:${j.data.event?.corpId}`);
  assert.deepEqual(byAccount.sort(), ['929:1:929', '930:1:930']);
  const changedAt = (await jobs()).map((j) => (JSON.parse(j.data.rawBody) as { changedAt: string }).changedAt).sort();
  assert.notEqual(changedAt[0], changedAt[1], 'each account answered with its own object');
});
