/**
 * Redis Cluster (three masters, three replicas, real processes on loopback): the service as on one server — both
 * Sellsy formats, deduplication, RECORD_ORDER=latest across two listeners and two workers, replay, stats, doctor,
 * /metrics, the dashboard in a real browser — then `kill -9` of the master that holds the queue's slot under load,
 * with REDIS_WAIT_REPLICAS=1: after its replica takes over, nothing acknowledged is missing.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { Cluster } from 'ioredis';
import { chromium } from 'playwright-core';
import { doctor } from '../../src/cli/doctor.ts';
import { replay } from '../../src/cli/replay.ts';
import { collectStats } from '../../src/cli/stats.ts';
import { PermanentError } from '../../src/errors.ts';
import { watchQueues } from '../../src/metrics/queue-stats.ts';
import { createConnection } from '../../src/queue/connection.ts';
import { inspectDurability } from '../../src/queue/durability.ts';
import { recordQueueName } from '../../src/queue/records.ts';
import type { SellsyEvent } from '../../src/sellsy/payload.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { assertOneJobPerDelivery, steadyLoad } from '../helpers/load.ts';
import { type RedisCluster, startCluster } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, recordBody, startTestWorker, type TestWorker } from '../helpers/worker.ts';

let cluster: RedisCluster;
let env: Record<string, string>;
const cleanup: (() => Promise<void>)[] = [];
before(async () => {
  cluster = await startCluster();
  env = { REDIS_CLUSTER_NODES: cluster.seedsEnv };
});
after(async () => {
  // Each step bounded, and named when it is not done in time: a close that hangs is reported, not waited for.
  const bounded = async (name: string, step: () => Promise<unknown>) => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise((resolve) => {
      timer = setTimeout(() => resolve(console.error(`cleanup: ${name} did not end within 20 s`)), 20_000);
    });
    await Promise.race([step().catch(() => undefined), late]);
    clearTimeout(timer);
  };
  for (const fn of cleanup.reverse()) await bounded(fn.toString().slice(0, 40), fn);
  await bounded('the cluster', () => cluster?.destroy() ?? Promise.resolve());
});

async function listener(extra: Record<string, string> = {}): Promise<TestListener> {
  const l = await startTestListener('redis://unused', { ...env, ...extra });
  cleanup.push(() => l.close());
  await untilReady(l);
  return l;
}

async function worker(
  l: TestListener,
  extra: Record<string, string>,
  handler: Parameters<typeof startTestWorker>[2],
): Promise<TestWorker> {
  const w = await startTestWorker(l, { ...env, ...extra }, handler);
  cleanup.push(() => w.close());
  return w;
}

/** The hash slot of a key, as the Cluster computes it. */
async function slotOf(client: Cluster, key: string): Promise<number> {
  return Number(await client.cluster('KEYSLOT', key));
}

test('both Sellsy formats and deduplication on a Cluster; every key of the queue in one hash slot', async () => {
  const l = await listener({ QUEUE_NAME: 'cluster-formats' });
  assert.equal(l.config.queuePrefix, '{bull}');
  const notif = JSON.stringify({ relatedtype: 'invoice', event: 'created', relatedid: '11', corpid: '929' });
  const form = await post(l.url, `notif=${encodeURIComponent(notif)}`, {
    'content-type': 'application/x-www-form-urlencoded',
  });
  const plain = await post(l.url, recordBody('12', 1), json);
  const again = await post(l.url, recordBody('12', 1), json);
  assert.deepEqual(
    [form.status, plain.status, again.status, form.body.duplicate, plain.body.duplicate, again.body.duplicate],
    [200, 200, 200, false, false, true],
  );
  assert.equal(again.body.jobId, plain.body.jobId, 'the duplicate folded into the first job');
  const formJob = await l.queue.getJob(form.body.jobId as string);
  assert.equal(formJob?.name, 'invoice.created');
  assert.equal(formJob?.data.rawBody, `notif=${encodeURIComponent(notif)}`);
  assert.equal((await l.queue.getJobCounts('waiting')).waiting, 2);

  const client = new Cluster(cluster.seeds);
  cleanup.push(async () => client.disconnect());
  await client.ping();
  const keys = (await Promise.all(client.nodes('master').map((node) => node.keys('{bull}:cluster-formats:*')))).flat();
  assert.ok(keys.length >= 5, `the queue's keys: ${keys.join(', ')}`);
  const slots = new Set(await Promise.all(keys.map((key) => slotOf(client, key))));
  assert.equal(slots.size, 1, 'one slot for every key of the queue');
});

test('RECORD_ORDER=latest with two listeners and two workers: every delivery one job, never two runs of a record at once', async () => {
  const queue = 'cluster-records';
  const [a, b] = [await listener({ QUEUE_NAME: queue }), await listener({ QUEUE_NAME: queue })];
  const running = new Map<string, number>();
  let overlaps = 0;
  const handled: string[] = [];
  const handler = {
    '*': async (event: SellsyEvent | null) => {
      const record = event?.relatedId ?? '';
      const now = (running.get(record) ?? 0) + 1;
      running.set(record, now);
      if (now > 1) overlaps++;
      await new Promise((resolve) => setTimeout(resolve, 20));
      running.set(record, (running.get(record) ?? 1) - 1);
      handled.push(record);
    },
  };
  await worker(a, { RECORD_ORDER: 'latest', QUEUE_NAME: queue, WORKER_CONCURRENCY: '8' }, handler);
  await worker(b, { RECORD_ORDER: 'latest', QUEUE_NAME: queue, WORKER_CONCURRENCY: '8' }, handler);
  const answers = await Promise.all(
    Array.from({ length: 120 }, (_, i) => post((i % 2 ? a : b).url, recordBody(String(i % 6), i), json)),
  );
  assert.ok(answers.every((r) => r.status === 200 && r.body.duplicate === false));
  const jobs = await a.queue.getJobs(['waiting', 'active', 'completed', 'failed', 'delayed']);
  assert.equal(new Set(jobs.map((j) => j.id)).size, 120, 'one ingest job per delivery, across both listeners');
  await waitFor(async () => (await a.queue.getJobCounts('completed')).completed === 120, 30_000, 'the deliveries');
  const records = new Queue(recordQueueName(queue), { connection: a.queue.opts.connection, prefix: '{bull}' });
  cleanup.push(() => records.close());
  await waitFor(
    async () => {
      const c = await records.getJobCounts('waiting', 'active', 'delayed');
      return (c.waiting ?? 0) + (c.active ?? 0) + (c.delayed ?? 0) === 0 && new Set(handled).size === 6;
    },
    30_000,
    'every record to run',
  );
  assert.equal(overlaps, 0, 'two runs of one record never overlapped, across two workers');
});

test('replay, stats, doctor and /metrics on a Cluster: per master, and the queues on one', async () => {
  const queue = 'cluster-ops';
  const l = await listener({ QUEUE_NAME: queue, JOB_ATTEMPTS: '1', REDIS_WAIT_REPLICAS: '1' });
  let fixed = false;
  const handled: string[] = [];
  await worker(
    l,
    { QUEUE_NAME: queue, JOB_ATTEMPTS: '1' },
    {
      '*': async (_event, context) => {
        if (!fixed) throw new PermanentError('downstream refused');
        handled.push(context.deliveryId);
      },
    },
  );
  const sent = await post(l.url, recordBody('31', 1), json);
  await waitFor(async () => (await l.queue.getFailedCount()) === 1, 15_000, 'a dead letter');

  const stats = await collectStats(l.config);
  assert.equal(stats.nodes.length, 3, 'each master');
  assert.equal(stats.nodes.filter((n) => n.holdsQueues).length, 1, 'one master holds the queues');
  assert.ok(stats.nodes.every((n) => n.replicas === 1));
  assert.equal(stats.queues[0]?.deadLetters.count, 1);

  const lines: string[] = [];
  await doctor(l.config, (line) => lines.push(line));
  for (const check of ['redis eviction', 'redis aof', 'redis replicas']) {
    const perNode = lines.filter((line) => new RegExp(`^ok +${check} 127\\.0\\.0\\.1:\\d+: `).test(line));
    assert.equal(perNode.length, 3, `${check} on each master:\n${lines.join('\n')}`);
  }
  assert.ok(lines.some((line) => /^ok +redis: Cluster .* answers \(3 masters: /.test(line)));

  // The start-up durability check reads every master and reports the worst, by its address.
  const [weak] = await cluster.masters();
  assert.ok(weak);
  const weakAdmin = weak.client();
  cleanup.push(async () => weakAdmin.disconnect());
  await weakAdmin.config('SET', 'maxmemory-policy', 'allkeys-lru');
  const inspecting = createConnection(l.config.redis, { role: 'worker', name: 'durability' });
  cleanup.push(async () => inspecting.disconnect());
  await inspecting.ping();
  const report = await inspectDurability(inspecting);
  await weakAdmin.config('SET', 'maxmemory-policy', 'noeviction');
  assert.equal(report.node, `127.0.0.1:${weak.port}`);
  assert.equal(report.findings[0]?.code, 'eviction');

  const watching = watchQueues(l.metrics, l.config);
  cleanup.push(() => watching.close());
  // The scrape reads the queue through a Cluster connection of its own, once that one is connected.
  const failedGauge = /sellsy_webhooks_queue_jobs\{[^}]*state="failed"[^}]*\} 1/;
  await waitFor(async () => failedGauge.test(await (await fetch(`${l.url}/metrics`)).text()), 10_000, '/metrics');

  fixed = true;
  const done = await replay(l.config, { ids: new Set(), name: null, since: null, until: null }, false, () => undefined);
  assert.deepEqual(done, { matched: 1, replayed: 1, skipped: 0 });
  await waitFor(() => handled.includes(sent.body.jobId as string), 15_000, 'the replayed job ran');
});

test('the dashboard in a real browser on a Cluster', async () => {
  assert.ok(existsSync('/usr/bin/chromium'), 'the browser test needs /usr/bin/chromium (.ci/run installs it)');
  const l = await listener({ QUEUE_NAME: 'cluster-dashboard', ADMIN_TOKEN: 'cluster-dashboard-token-0123456789' });
  await post(l.url, recordBody('41', 1), json);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking'],
  });
  cleanup.push(() => browser.close());
  const origin = new URL(l.url).origin;
  const context = await browser.newContext({
    extraHTTPHeaders: { authorization: 'Bearer cluster-dashboard-token-0123456789' },
  });
  await context.route(
    (url) => url.origin !== origin,
    (route) => route.abort(),
  );
  const page = await context.newPage();
  assert.equal((await page.goto(`${l.url}/admin/queue/cluster-dashboard`))?.status(), 200);
  await page.getByText('invoice.step', { exact: true }).first().waitFor({ timeout: 15_000 });
});

test('kill -9 of the master of the queue under load, REDIS_WAIT_REPLICAS=1: nothing acknowledged is missing', async () => {
  const queue = 'cluster-failover';
  // The default acknowledgement: the inbox (in the queue's slot), moved by the listener's mover thread.
  const l = await listener({ QUEUE_NAME: queue, REDIS_WAIT_REPLICAS: '1', ACK_BUDGET_MS: '50', ACK_WRITE: 'inbox' });
  const key = `{bull}:${queue}:meta`;
  const before = await cluster.masterOf(key);
  let killed: Promise<unknown> | null = null;
  const count = 1000;
  const answers = await steadyLoad(l.url, count, 200, {
    tag: 'cluster',
    onSent: (i) => {
      if (i === count / 2) killed = cluster.killMasterOf(key);
    },
  });
  await killed;
  const afterKill = await cluster.masterOf(key);
  assert.notEqual(afterKill.port, before.port, 'a replica took over the slot');
  assert.equal(answers.filter((a) => a.status === 200).length, count, 'every delivery answered 200');
  // The new master has no replica until the old one comes back as its replica: until then WAIT 1 cannot be met, and
  // what the spool took stays there (doctor says so).
  assert.ok((l.spooling?.spool.status().depth ?? 0) > 0, 'deliveries wait in the spool for a replica');
  await cluster.restart(before);
  await l.spooling?.drained(30_000);
  assert.equal(await assertOneJobPerDelivery(l.queue, answers, assert.fail), count);
});
