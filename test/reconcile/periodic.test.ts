/**
 * The periodic reconcile run by workers (RECONCILE_INTERVAL_SECONDS), against real Redis, real worker processes and
 * the fake Sellsy: one run per interval across two workers, a run killed with `kill -9` resumed from its cursor, the
 * quota share, the metrics.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { type Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { stats } from '../../src/cli/stats.ts';
import { loadConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/logger.ts';
import type { WebhookJobData } from '../../src/queue/contract.ts';
import { reconcileQueueName } from '../../src/reconcile/periodic.ts';
import { startWorker } from '../../src/worker/worker.ts';
import { spawnCli } from '../helpers/cli.ts';
import { type FakeSellsy, startFakeSellsy } from '../helpers/fake-sellsy.ts';
import { searchRoute } from '../helpers/fake-sellsy-search.ts';
import { LogCapture } from '../helpers/listener.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

let redis: RedisServer;
let client: Redis;
const fakes: FakeSellsy[] = [];
const queues: Queue[] = [];
before(async () => {
  redis = await startRedis();
  client = new Redis(redis.url);
});
after(async () => {
  client?.disconnect();
  await Promise.all(queues.map((q) => q.close()));
  await Promise.all(fakes.map((f) => f.close()));
  await redis?.destroy();
});

const ago = (ms: number) => new Date(Date.now() - ms).toISOString();

async function setup() {
  const queueName = `test-${randomBytes(4).toString('hex')}`;
  const fake = await startFakeSellsy();
  fakes.push(fake);
  const queue = new Queue<WebhookJobData>(queueName, { connection: { url: redis.url } });
  const reconcileQueue = new Queue(reconcileQueueName(queueName), { connection: { url: redis.url } });
  queues.push(queue, reconcileQueue);
  const env: Record<string, string> = {
    REDIS_URL: redis.url,
    QUEUE_NAME: queueName,
    SELLSY_CLIENT_ID: fake.clientId,
    SELLSY_CLIENT_SECRET: fake.clientSecret,
    SELLSY_API_URL: fake.apiUrl,
    SELLSY_TOKEN_URL: fake.tokenUrl,
    SELLSY_ACCOUNT_ID: '929',
    RECORD_ORDER: 'off',
    WORKER_LOCK_MS: '1000',
    LOG_LEVEL: 'silent',
  };
  const synthetic = async () =>
    (
      (await queue.getJobs([
        'wait',
        'active',
        'completed',
        'failed',
        'delayed',
        'prioritized',
      ])) as Job<WebhookJobData>[]
    ).filter((j) => j.data.source === 'reconcile');
  const cursor = async () => Number(await client.get(`bull:${queueName}:reconcile:cursor`)) || null;
  const runs = async () => {
    const last = await client.hget(`bull:${queueName}:reconcile:runs`, 'lastSuccess');
    return last === null ? null : (JSON.parse(last) as { at: string; changes: number; queued: number });
  };
  return { queueName, fake, queue, reconcileQueue, env, synthetic, cursor, runs };
}

async function worker(env: Record<string, string>, registry?: Registry) {
  return startWorker(loadConfig(env), createLogger('silent', new LogCapture()), registry ? { registry } : {});
}

test('two workers: the periodic reconcile runs once per interval, and each change is queued once', async () => {
  const { fake, env, synthetic, reconcileQueue, runs } = await setup();
  for (const id of [1, 2, 3]) fake.put('companies', String(id), { id, updated_at: ago(60_000 + id) });
  fake.put('contacts', '10', { id: 10, updated: ago(30_000) });
  const invoice = (status: string) => ({ id: 20, status, created: ago(3_600_000), amounts: { total: '10.00' } });
  fake.put('invoices', '20', invoice('due'));
  const settings = { ...env, RECONCILE_INTERVAL_SECONDS: '1' };
  const registries = [new Registry(), new Registry()];
  const workers = [await worker(settings, registries[0]), await worker(settings, registries[1])];
  const startedAt = Date.now();
  try {
    await waitFor(async () => (await runs()) !== null, 15_000, 'a first run succeeded');
    assert.equal(
      (await synthetic()).filter((j) => j.name === 'invoice.reconciled').length,
      0,
      'not a backfill: the first scan of invoices only records their fingerprints',
    );
    // Changes after the first run: the next run finds them, the runs after it do not queue them again.
    fake.put('companies', '4', { id: 4, updated_at: new Date().toISOString() });
    fake.put('invoices', '20', invoice('paid'));
    await new Promise((r) => setTimeout(r, 4000));
    const elapsedS = (Date.now() - startedAt) / 1000;
    const jobs = (await reconcileQueue.getJobs(['completed', 'failed', 'active'])) as Job[];
    const done = jobs.filter((j) => j.returnvalue === 'success');
    assert.ok(done.length >= 3, `${done.length} runs in ${elapsedS} s`);
    assert.ok(
      jobs.length <= Math.ceil(elapsedS) + 1,
      `at most one run per interval across both workers: ${jobs.length} runs in ${elapsedS} s`,
    );
    const ids = (await synthetic()).map((j) => `${j.name}:${j.data.event?.relatedId}`).sort();
    assert.deepEqual(ids, [
      'invoice.reconciled:20',
      'people.reconciled:10',
      'third.reconciled:1',
      'third.reconciled:2',
      'third.reconciled:3',
      'third.reconciled:4',
    ]);
    // Every search type read once per run: no two runs read at once.
    const searches = fake.apiRequests().filter((r) => r.path.startsWith('/v2/companies/search'));
    assert.equal(searches.length, done.length + jobs.filter((j) => j.returnvalue === 'failure').length);

    const texts = await Promise.all(registries.map((r) => r.metrics()));
    const value = (text: string, series: string) =>
      Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
    const both = (series: string) => texts.reduce((n, t) => n + value(t, series), 0);
    assert.equal(both('sellsy_webhooks_reconcile_runs_total{outcome="success"}'), done.length, 'runs by outcome');
    assert.ok(both('sellsy_webhooks_reconcile_objects_scanned_total{collection="companies"}') >= 3 * done.length);
    assert.equal(both('sellsy_webhooks_reconcile_changes_total{collection="companies"}'), 4, 'changes found');
    assert.equal(both('sellsy_webhooks_reconcile_duration_seconds_count'), done.length);
    // The runs used the workers' own Sellsy clients (sellsy-fetch's): their calls count there, one token per account.
    assert.ok(
      both('sellsy_webhooks_sellsy_api_calls_total') >=
        fake.apiRequests().filter((r) => r.path.includes('/search')).length,
      "the searches are counted by the workers' API clients",
    );
    const text = texts[0] ?? '';
    assert.match(text, /sellsy_webhooks_reconcile_interval_seconds 1\n/);
    const last = /sellsy_webhooks_reconcile_last_success_timestamp_seconds ([\d.e+]+)/.exec(text);
    assert.ok(last && Number(last[1]) * 1000 > startedAt, 'the last success is after the start');

    const json: string[] = [];
    assert.equal(await stats(loadConfig(settings), (l) => json.push(l), { json: true }), 0);
    const report = JSON.parse(json.join('')) as {
      reconcile: { intervalSeconds: number; cursor: string; last: { outcome: string; changes: number; at: string } };
    };
    assert.equal(report.reconcile.intervalSeconds, 1);
    assert.equal(report.reconcile.last.outcome, 'success');
    assert.ok(Date.parse(report.reconcile.cursor) > startedAt, 'the cursor is the end of the last window');
    const lines: string[] = [];
    await stats(loadConfig(settings), (l) => lines.push(l));
    assert.ok(
      lines.some((l) =>
        /^reconcile {5}every 1 s; last run \S+, success: \d+ changes \(\d+ queued\) in \d+ objects/.test(l),
      ),
      lines.join('\n'),
    );
  } finally {
    await Promise.all(workers.map((w) => w.close()));
  }
});

test('a run killed with kill -9 in the middle leaves its cursor; the next run queues what was left, nothing twice', async () => {
  const { fake, env, synthetic, cursor, runs } = await setup();
  for (let id = 1; id <= 250; id++) fake.put('companies', String(id), { id, updated_at: ago(60_000 + id * 10) });
  // The second page of companies waits until released: the run is killed while it waits.
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => {
    release = r;
  });
  let holding = true;
  const search = searchRoute(fake);
  fake.route('POST', /^\/v2\/(companies)\/search$/, async (context) => {
    if (holding && context.request.path.includes('offset=')) await held;
    return search(context);
  });
  const settings = { ...env, RECONCILE_INTERVAL_SECONDS: '2', METRICS_PORT: '0' };
  const first = spawnCli(['work'], settings);
  try {
    await waitFor(
      () => fake.apiRequests().some((r) => r.path.startsWith('/v2/companies/search') && r.path.includes('offset=')),
      20_000,
      'the run asked for its second page',
    );
    await waitFor(async () => (await synthetic()).length === 100, 5000, 'the first page queued');
    const before = await cursor();
    assert.ok(before !== null, 'the first run set its cursor before reading');
    first.child.kill('SIGKILL');
    await first.exited;
  } finally {
    first.child.kill('SIGKILL');
  }
  holding = false;
  release();
  const cursorAfterKill = await cursor();
  assert.equal(await runs(), null, 'no run succeeded');
  const second = await worker({ ...settings, METRICS_PORT: '' });
  try {
    await waitFor(async () => (await runs()) !== null, 20_000, 'the next run succeeded');
    const ids = (await synthetic()).map((j) => j.data.event?.relatedId);
    assert.equal(ids.length, 250, 'every change queued, none twice');
    assert.equal(new Set(ids).size, 250);
    const last = await runs();
    assert.equal(last?.queued, 150, 'the next run queued what the killed one had left');
    assert.ok(((await cursor()) ?? 0) > (cursorAfterKill ?? 0), 'the cursor moved once a run succeeded');
  } finally {
    await second.close();
  }
});

test('a failed run is recorded as such and leaves the cursor where it was; stats shows its error', async () => {
  const { fake, env, cursor, runs, queueName } = await setup();
  fake.failNext(10_000, 500);
  const registry = new Registry();
  const settings = { ...env, RECONCILE_INTERVAL_SECONDS: '1' };
  const running = await worker(settings, registry);
  try {
    const last = async () => {
      const v = await client.hget(`bull:${queueName}:reconcile:runs`, 'last');
      return v === null ? null : (JSON.parse(v) as { outcome: string; error: string });
    };
    await waitFor(async () => (await last()) !== null, 15_000, 'a run ended');
    const first = await cursor();
    await waitFor(
      async () => (await registry.metrics()).includes('sellsy_webhooks_reconcile_runs_total{outcome="failure"} 2'),
      15_000,
      'a second failed run',
    );
    assert.equal(await cursor(), first, 'failed runs leave the cursor');
    assert.equal(await runs(), null, 'no success recorded');
    assert.match((await last())?.error ?? '', /answered 500/);
    assert.match(await registry.metrics(), /sellsy_webhooks_reconcile_errors_total\{collection="companies"\} [1-9]/);
    const lines: string[] = [];
    await stats(loadConfig(settings), (l) => lines.push(l));
    assert.ok(
      lines.some((l) => /^reconcile .*, failure: .*answered 500.*; last success never$/.test(l)),
      lines.join('\n'),
    );
  } finally {
    await running.close();
  }
});

test('a run longer than the interval: the next one, in the other worker, is skipped instead of running beside it', async () => {
  const { fake, env, reconcileQueue } = await setup();
  fake.put('companies', '1', { id: 1, updated_at: ago(60_000) });
  let inFlight = 0;
  let most = 0;
  const search = searchRoute(fake);
  fake.route('POST', /^\/v2\/(companies)\/search$/, async (context) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, 2500));
    inFlight--;
    return search(context);
  });
  const settings = { ...env, RECONCILE_INTERVAL_SECONDS: '1', WORKER_LOCK_MS: '3000' };
  const workers = [await worker(settings), await worker(settings)];
  try {
    await waitFor(
      async () => {
        const jobs = (await reconcileQueue.getJobs(['completed'])) as Job[];
        return jobs.some((j) => j.returnvalue === 'skipped') && jobs.some((j) => j.returnvalue === 'success');
      },
      20_000,
      'a run succeeded and one was skipped',
    );
    assert.equal(most, 1, 'never two searches of one run type at once: never two runs at once');
  } finally {
    await Promise.all(workers.map((w) => w.close()));
  }
});

test('a worker started with the periodic reconcile off removes the schedule workers left', async () => {
  const { env, reconcileQueue } = await setup();
  const on = await worker({ ...env, RECONCILE_INTERVAL_SECONDS: '60' });
  await waitFor(async () => (await reconcileQueue.getJobSchedulersCount()) === 1, 10_000, 'scheduled');
  await on.close();
  const off = await worker(env);
  try {
    await waitFor(async () => (await reconcileQueue.getJobSchedulersCount()) === 0, 10_000, 'the schedule removed');
  } finally {
    await off.close();
  }
});
