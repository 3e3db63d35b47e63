import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { type Job, Queue, Worker } from 'bullmq';
import { type StatsReport, stats } from '../../src/cli/stats.ts';
import { type Config, loadConfig } from '../../src/config/config.ts';
import { encodeEntry, inboxKeys } from '../../src/queue/inbox.ts';
import { jobOptionsOf } from '../../src/queue/producer-options.ts';
import { recordQueueName } from '../../src/queue/records.ts';
import { tempSpoolDir } from '../helpers/cli.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { freePort, type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

let redis: RedisServer;
/** The known sequence: jobs 1–3 completed, 4 and 5 failed for good, 6 and 7 waiting, no worker left. */
let known: Config;
before(async () => {
  redis = await startRedis();
  known = configFor(`stats-${randomUUID().slice(0, 8)}`);
  const queue = new Queue(known.queueName, { connection: { url: redis.url } });
  const worker = startWorker(known.queueName, async (job) => {
    if (/00[45]$/.test(job.id ?? '')) throw new Error(`downstream refused ${job.id}\n    at handler (x.js:1:1)`);
  });
  try {
    for (let i = 1; i <= 5; i++) await add(queue, known, i);
    await waitFor(async () => (await queue.getCompletedCount()) === 3, 10_000, 'three completed jobs');
    await waitFor(async () => (await queue.getFailedCount()) === 2, 10_000, 'two dead letters');
    await worker.close();
    for (let i = 6; i <= 7; i++) await add(queue, known, i);
  } finally {
    await worker.close();
    await queue.close();
  }
});
after(async () => {
  await redis?.destroy();
});

function configFor(queueName: string, env: Record<string, string> = {}): Config {
  return loadConfig({
    REDIS_URL: redis.url,
    QUEUE_NAME: queueName,
    SPOOL_DIR: tempSpoolDir(),
    JOB_ATTEMPTS: '1',
    ...env,
  });
}

/** Job `i` as the listener writes it: the contract's data, the delivery id as job id, the configured options. */
async function add(queue: Queue, config: Config, i: number) {
  const { name, data } = jobFixture(i);
  await queue.add(name, data, { ...jobOptionsOf(config), jobId: data.deliveryId });
}

function startWorker(queueName: string, processor: (job: Job) => Promise<void>, metrics = false) {
  return new Worker(queueName, processor, {
    connection: { url: redis.url, maxRetriesPerRequest: null },
    concurrency: 1,
    ...(metrics ? { metrics: { maxDataPoints: 60 } } : {}),
  });
}

async function runStats(config: Config, json = false): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await stats(config, (line) => lines.push(line), { json });
  return { code, lines };
}

async function report(config: Config): Promise<StatsReport> {
  const { code, lines } = await runStats(config, true);
  assert.equal(code, 0);
  assert.equal(lines.length, 1, 'one JSON object on one line');
  return JSON.parse(lines[0] ?? '') as StatsReport;
}

test('stats shows the counts by state, the throughput and the most recent dead letters', async () => {
  const { code, lines } = await runStats(known);
  assert.equal(code, 0);
  const text = lines.join('\n');
  assert.match(text, /^redis 127\.0\.0\.1:\d+: [\d.]+ [KMG]?i?B used, 0 replicas in sync$/m);
  assert.match(text, new RegExp(`^queue ${known.queueName} \\(ingest\\)$`, 'm'));
  assert.match(text, /^ {2}jobs {10}waiting 2, active 0, delayed 0, prioritized 0, completed 3, failed 2$/m);
  assert.match(text, /^ {4}completed +3\.00 +0\.60 +0\.20$/m);
  assert.match(text, /^ {4}failed +2\.00 +0\.40 +0\.13$/m);
  assert.match(text, /\(finish times of kept jobs\)/);
  assert.match(text, /^ {2}oldest wait {3}invoice\.step 00000000-0000-4000-8000-000000000006, added /m);
  assert.match(text, /^ {2}workers {7}0 connected$/m);
  assert.match(text, /^ {2}dead letters {2}2 /m);
  const dead = lines.filter((l) => /^ {4}00000000-/.test(l));
  assert.equal(dead.length, 2);
  assert.match(
    dead[0] ?? '',
    /^ {4}00000000-0000-4000-8000-000000000005 {2}invoice\.step {2}failed \S+Z after 1: downstream refused 00000000-0000-4000-8000-000000000005 at handler \(x\.js:1:1\)$/,
  );
  assert.match(dead[1] ?? '', /000000000004/);
  assert.match(text, /^spool {9}\S+: 0 deliveries, 0\.00 MiB of 1\.0 GiB$/m);
  assert.ok(!lines.some((l) => l.includes('-records')), 'no record queue when it has no keys');
});

test('stats --json prints one object with the same figures', async () => {
  const r = await report(known);
  const [ingest] = r.queues;
  assert.ok(ingest);
  assert.equal(r.queues.length, 1);
  assert.equal(ingest.name, known.queueName);
  assert.deepEqual(ingest.counts, { waiting: 2, active: 0, delayed: 0, prioritized: 0, completed: 3, failed: 2 });
  assert.equal(ingest.throughput.method, 'finished-sets');
  assert.deepEqual(
    ingest.throughput.windows.map((w) => [w.minutes, w.completed, w.failed]),
    [
      [1, 3, 2],
      [5, 3, 2],
      [15, 3, 2],
    ],
  );
  assert.equal(ingest.oldestWaiting?.id, jobFixture(6).data.deliveryId);
  assert.equal(ingest.deadLetters.count, 2);
  assert.deepEqual(
    ingest.deadLetters.latest.map((d) => [d.id, d.name, d.attemptsMade]),
    [
      [jobFixture(5).data.deliveryId, 'invoice.step', 1],
      [jobFixture(4).data.deliveryId, 'invoice.step', 1],
    ],
  );
  assert.ok(!ingest.deadLetters.latest.some((d) => d.reason.includes('\n')));
  assert.equal(ingest.workers, 0);
  assert.equal(r.redis, redis.url);
  assert.equal(r.nodes.length, 1);
  assert.equal(r.nodes[0]?.node, `127.0.0.1:${redis.port}`);
  assert.ok((r.nodes[0]?.usedMemoryBytes ?? 0) > 0);
  assert.equal(r.nodes[0]?.replicas, 0);
  assert.ok(r.spool.enabled && !('error' in r.spool) && r.spool.depth === 0);
});

test('stats reads the throughput from BullMQ metrics when the worker records them', async () => {
  const config = configFor(`stats-${randomUUID().slice(0, 8)}`);
  const queue = new Queue(config.queueName, { connection: { url: redis.url } });
  const worker = startWorker(
    config.queueName,
    async (job) => {
      if (job.id?.endsWith('005')) throw new Error('refused');
    },
    true,
  );
  try {
    for (let i = 1; i <= 5; i++) await add(queue, config, i);
    await waitFor(async () => (await queue.getFailedCount()) === 1, 10_000, 'a dead letter');
    await waitFor(async () => (await queue.getCompletedCount()) === 4, 10_000, 'four completed jobs');
    const throughput = (await report(config)).queues[0]?.throughput;
    assert.equal(throughput?.method, 'bullmq-metrics');
    // The 15-minute window holds every job, even when the run crossed a minute boundary.
    const last15 = throughput?.windows.find((w) => w.minutes === 15);
    assert.deepEqual([last15?.completed, last15?.failed], [4, 1]);
  } finally {
    await worker.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
});

test('stats counts the workers connected to the queue', async () => {
  const config = configFor(`stats-${randomUUID().slice(0, 8)}`);
  const queue = new Queue(config.queueName, { connection: { url: redis.url } });
  const worker = startWorker(config.queueName, async () => undefined);
  try {
    await waitFor(async () => (await queue.getWorkersCount()) === 1, 10_000, 'the worker to connect');
    assert.equal((await report(config)).queues[0]?.workers, 1);
  } finally {
    await worker.close();
    await queue.close();
  }
});

test('stats adds the record queue once it has keys', async () => {
  const config = configFor(`stats-${randomUUID().slice(0, 8)}`);
  const records = new Queue(recordQueueName(config.queueName), { connection: { url: redis.url } });
  try {
    await add(records, config, 1);
    const r = await report(config);
    assert.deepEqual(
      r.queues.map((q) => [q.name, q.role, q.counts.waiting]),
      [
        [config.queueName, 'ingest', 0],
        [recordQueueName(config.queueName), 'records', 1],
      ],
    );
  } finally {
    await records.obliterate({ force: true });
    await records.close();
  }
});

test('stats shows the acknowledged deliveries still in the inbox, and whether a listener is moving them', async () => {
  const config = configFor(`stats-${randomUUID().slice(0, 8)}`);
  const keys = inboxKeys(config.queuePrefix, config.queueName);
  const client = redis.client();
  try {
    const empty = await runStats(config);
    assert.ok(empty.lines.includes('inbox         empty (no mover running)'), empty.lines.join('\n'));
    const receivedAt = new Date(Date.now() - 90_000).toISOString();
    await client.rpush(keys.inbox, encodeEntry(jobFixture(1, receivedAt)), encodeEntry(jobFixture(2)));
    const r = await report(config);
    assert.equal(r.inbox.depth, 2);
    assert.ok(r.inbox.oldestAgeSeconds >= 89 && r.inbox.oldestAgeSeconds <= 120, String(r.inbox.oldestAgeSeconds));
    assert.equal(r.inbox.moverRunning, false);
    const stuck = (await runStats(config)).lines.find((l) => l.startsWith('inbox'));
    assert.match(
      stuck ?? '',
      /^inbox {9}2 deliveries waiting to become jobs, oldest \d+ s old; no listener is moving them/,
    );
    await client.set(keys.lease, 'a-mover', 'PX', 10_000);
    assert.equal((await report(config)).inbox.moverRunning, true);
  } finally {
    client.disconnect();
  }
});

test('stats exits 1 at once with the masked address when Redis is unreachable', async () => {
  const port = await freePort();
  const config = loadConfig({ REDIS_URL: `redis://:hunter2hunter2@127.0.0.1:${port}`, SPOOL_DIR: tempSpoolDir() });
  const started = Date.now();
  const { code, lines } = await runStats(config);
  assert.equal(code, 1);
  assert.deepEqual(lines.length, 1);
  assert.match(
    lines[0] ?? '',
    new RegExp(
      `^sellsy-webhooks stats: Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port} did not answer: .*ECONNREFUSED`,
    ),
  );
  assert.ok(!lines[0]?.includes('hunter2'));
  assert.ok(Date.now() - started < 5000);
  const json = await runStats(config, true);
  assert.equal(json.code, 1);
  assert.match((JSON.parse(json.lines[0] ?? '') as { error: string }).error, /did not answer/);
});
