/**
 * The inbox mover against a real Redis: entries become jobs once; what a killed mover left in `moving` is written
 * again without a second job; a mover that lost its lease cannot remove entries; two movers share one inbox; a
 * folded duplicate is reported and reruns its record.
 */

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { loadConfig } from '../../src/config/config.ts';
import { createConnection } from '../../src/queue/connection.ts';
import type { WebhookJob } from '../../src/queue/contract.ts';
import { encodeEntry, inboxCommands, inboxKeys, inboxStatus, LEASE_LOST } from '../../src/queue/inbox.ts';
import { InboxMover, type MovedReport } from '../../src/queue/mover.ts';
import { BullmqProducer } from '../../src/queue/producer.ts';
import { producerOptionsFrom } from '../../src/queue/producer-options.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

let shared: RedisServer | undefined;
async function redisServer(): Promise<RedisServer> {
  if (!shared) {
    const server = await startRedis();
    shared = server;
    cleanup.push(() => server.destroy());
  }
  return shared;
}

let queues = 0;
/** A queue of its own on the shared Redis, a client on it, and a way to start movers. */
async function setUp() {
  const redis = await redisServer();
  const queueName = `mover-${++queues}`;
  const config = loadConfig({ REDIS_URL: redis.url, QUEUE_NAME: queueName, PORT: '0' });
  const keys = inboxKeys(config.queuePrefix, queueName);
  const client = new Redis(redis.url);
  cleanup.push(async () => void client.disconnect());
  const queue = new Queue(queueName, { connection: { url: redis.url } });
  cleanup.push(() => queue.close());
  const reports: MovedReport[] = [];
  const duplicates: string[] = [];
  const startMover = async (options: { leaseMs?: number; batch?: number } = {}) => {
    const producer = new BullmqProducer({
      ...producerOptionsFrom(config),
      role: 'mover',
      onDuplicate: async (job) => {
        duplicates.push(job.data.deliveryId);
      },
    });
    const waiter = createConnection(config.redis, { role: 'worker', name: `${queueName}:wait` });
    const mover = new InboxMover({ keys, producer, waiter, waitS: 0.2, ...options, onMoved: (r) => reports.push(r) });
    mover.start();
    let stopped = false;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      await mover.stop();
      await producer.close();
    };
    cleanup.push(stop);
    return { mover, producer, stop };
  };
  const push = (jobs: WebhookJob[]) => client.rpush(keys.inbox, ...jobs.map(encodeEntry));
  const jobIds = async () => (await queue.getJobs(['waiting'], 0, -1)).map((j) => j.id).sort();
  return { client, keys, queue, reports, duplicates, startMover, push, jobIds };
}

const fixtures = (from: number, count: number) => Array.from({ length: count }, (_, i) => jobFixture(from + i));
const idsOf = (jobs: WebhookJob[]) => jobs.map((j) => j.data.deliveryId).sort();

test('inbox entries become one job each, with the data pushed, and leave the inbox', async () => {
  const t = await setUp();
  const jobs = fixtures(1, 450);
  await t.push(jobs.slice(0, 300));
  await t.startMover({ batch: 100 });
  await t.push(jobs.slice(300));
  await waitFor(async () => (await t.queue.count()) === 450, 10_000, '450 jobs');
  await waitFor(async () => (await inboxStatus(t.client, t.keys)).depth === 0, 10_000, 'the inbox to empty');
  assert.deepEqual(await t.jobIds(), idsOf(jobs));
  const job = await t.queue.getJob(jobs[7]?.data.deliveryId as string);
  assert.deepEqual(job?.data, jobs[7]?.data);
  assert.equal(job?.name, 'invoice.step');
  const queued = t.reports.reduce((n, r) => n + r.queued, 0);
  assert.equal(queued, 450);
  assert.equal(
    t.reports.reduce((n, r) => n + r.lagsMs.length, 0),
    450,
  );
});

test('entries a killed mover left in `moving` are written again by the next holder: still one job each', async () => {
  const t = await setUp();
  const jobs = fixtures(1000, 120);
  // As a mover killed between its job writes and its removal leaves them: 120 entries in `moving`, 50 of them
  // already jobs, and its lease still set until it expires.
  await t.client.rpush(t.keys.moving, ...jobs.map(encodeEntry));
  const earlier = new BullmqProducer(
    producerOptionsFrom(loadConfig({ REDIS_URL: (await redisServer()).url, QUEUE_NAME: t.queue.name, PORT: '0' })),
  );
  cleanup.push(() => earlier.close());
  await waitFor(() => earlier.health().ready, 10_000, 'the producer to be ready');
  for (const job of jobs.slice(0, 50)) await earlier.enqueue(job);
  await t.client.set(t.keys.lease, 'killed-mover', 'PX', 800);
  await t.push(fixtures(2000, 30));

  const { mover } = await t.startMover({ leaseMs: 1000 });
  await waitFor(async () => (await t.queue.count()) === 150, 15_000, '150 jobs');
  assert.equal(mover.holdsLease, true);
  await waitFor(async () => (await inboxStatus(t.client, t.keys)).depth === 0, 10_000, 'the inbox to empty');
  assert.deepEqual(await t.jobIds(), idsOf([...jobs, ...fixtures(2000, 30)]));
  assert.equal(t.duplicates.length, 0, 'a job written again is the same job, not a folded duplicate');
});

test('a mover that lost its lease can neither claim nor remove entries', async () => {
  const t = await setUp();
  const cmds = inboxCommands(t.client);
  await t.client.rpush(t.keys.moving, 'a', 'b');
  await t.client.rpush(t.keys.inbox, 'c');
  await t.client.set(t.keys.lease, 'new-holder', 'PX', 10_000);
  await assert.rejects(
    cmds.inboxFinish(t.keys.inbox, t.keys.moving, t.keys.lease, 'old-holder', 10, 2),
    new RegExp(LEASE_LOST),
  );
  await assert.rejects(cmds.inboxClaim(t.keys.inbox, t.keys.moving, t.keys.lease, 'old-holder', 10), /LEASE_LOST/);
  assert.deepEqual(await t.client.lrange(t.keys.moving, 0, -1), ['a', 'b']);
  assert.deepEqual(await t.client.lrange(t.keys.inbox, 0, -1), ['c']);
  assert.equal(await cmds.inboxHold(t.keys.lease, 'old-holder', 1000), 0);
  // The holder claims: `moving` first, then the inbox.
  assert.deepEqual(await cmds.inboxClaim(t.keys.inbox, t.keys.moving, t.keys.lease, 'new-holder', 10), ['a', 'b', 'c']);
  // Finishing removes what was written and claims what came since, in one script.
  await t.client.rpush(t.keys.inbox, 'd');
  assert.deepEqual(await cmds.inboxFinish(t.keys.inbox, t.keys.moving, t.keys.lease, 'new-holder', 10, 2), ['c', 'd']);
  assert.deepEqual(await t.client.lrange(t.keys.moving, 0, -1), ['c', 'd']);
  assert.equal(await t.client.llen(t.keys.inbox), 0);
});

test('two movers on one inbox: one moves at a time; when it stops the other takes over; one job per entry', async () => {
  const t = await setUp();
  const a = await t.startMover({ leaseMs: 900 });
  const b = await t.startMover({ leaseMs: 900 });
  await waitFor(() => a.mover.holdsLease || b.mover.holdsLease, 10_000, 'a mover to take the lease');
  const [holder, other] = a.mover.holdsLease ? [a, b] : [b, a];
  assert.equal(other.mover.holdsLease, false);
  await t.push(fixtures(3000, 200));
  await waitFor(async () => (await t.queue.count()) === 200, 10_000, '200 jobs');
  await holder.stop();
  // Given up on stop: the other one takes it without waiting for the expiry.
  await waitFor(() => other.mover.holdsLease, 5_000, 'the other mover to take the lease');
  await t.push(fixtures(4000, 200));
  await waitFor(async () => (await t.queue.count()) === 400, 10_000, '400 jobs');
  assert.deepEqual(await t.jobIds(), idsOf([...fixtures(3000, 200), ...fixtures(4000, 200)]));
});

test('a delivery received twice is folded into the first job, reported as a duplicate, and reruns its record', async () => {
  const t = await setUp();
  const first = jobFixture(5000);
  const again = jobFixture(5001);
  again.data.dedupKey = first.data.dedupKey;
  await t.startMover();
  await t.push([first, again]);
  await waitFor(() => t.reports.reduce((n, r) => n + r.queued + r.duplicate, 0) === 2, 10_000, 'both moved');
  assert.deepEqual(await t.jobIds(), [first.data.deliveryId]);
  assert.equal(
    t.reports.reduce((n, r) => n + r.duplicate, 0),
    1,
  );
  assert.deepEqual(t.duplicates, [again.data.deliveryId]);
});
