/**
 * Redis Sentinel (one master, two replicas, three Sentinels, all real processes on loopback): a listener and a worker
 * under 200 deliveries/s for 7 s, the master switched in the middle, by `SENTINEL FAILOVER` and by `kill -9`. With
 * `REDIS_WAIT_REPLICAS=1`, every delivery answered 200 is exactly one job on the new master, and the worker, which
 * resumed by itself, processes every one.
 */
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import type { Redis } from 'ioredis';
import { doctor } from '../../src/cli/doctor.ts';
import { loadConfig } from '../../src/config/config.ts';
import { createConnection } from '../../src/queue/connection.ts';
import { post, startTestListener, untilReady } from '../helpers/listener.ts';
import { type Answer, assertOneJobPerDelivery, steadyLoad } from '../helpers/load.ts';
import { type SentinelGroup, startSentinelGroup } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, startTestWorker } from '../helpers/worker.ts';

const RATE = 200;
const COUNT = 1400;

async function switchUnderLoad(
  t: TestContext,
  switchMaster: (group: SentinelGroup) => Promise<unknown>,
): Promise<void> {
  const group = await startSentinelGroup();
  t.after(() => group.destroy());
  const env = { REDIS_SENTINELS: group.sentinelsEnv, REDIS_SENTINEL_MASTER: group.masterName, ACK_BUDGET_MS: '50' };
  // The default acknowledgement: the inbox, moved by the listener's mover thread through the same failover.
  const listener = await startTestListener('redis://unused', { ...env, ACK_WRITE: 'inbox' });
  t.after(() => listener.close());
  await untilReady(listener);
  assert.equal(listener.config.redisWaitReplicas, 1, 'the default with Sentinel');
  const handled = new Set<string>();
  const worker = await startTestWorker(listener, env, {
    '*': async (_event, context) => {
      handled.add(context.deliveryId);
    },
  });
  t.after(() => worker.close());

  const oldMaster = await group.master();
  let switched: Promise<unknown> | null = null;
  const answers: Answer[] = await steadyLoad(listener.url, COUNT, RATE, {
    tag: 'sentinel',
    onSent: (i) => {
      if (i === Math.floor(COUNT / 2)) switched = switchMaster(group);
    },
  });
  await switched;
  const newMaster = await group.master();
  assert.notEqual(newMaster.port, oldMaster.port, 'the master changed');

  const ok = answers.filter((a) => a.status === 200);
  assert.equal(ok.length, COUNT, `every delivery answered 200 (${answers.filter((a) => a.status !== 200).length} not)`);
  await listener.spooling?.drained(30_000);
  // Read on the new master, through the Sentinels.
  const jobs = await assertOneJobPerDelivery(listener.queue, answers, assert.fail);
  assert.equal(jobs, COUNT);
  await waitFor(
    () => ok.every((a) => handled.has(a.body.deliveryId as string)),
    60_000,
    'the worker to process every job',
  );
  const spooled = ok.filter((a) => a.body.spooled === true).length;
  t.diagnostic(`spooled during the switch: ${spooled} of ${COUNT}`);
}

test('SENTINEL FAILOVER under load: nothing acknowledged is lost, the worker resumes', async (t) => {
  await switchUnderLoad(t, (group) => group.failover());
});

test('kill -9 of the master under load: nothing acknowledged is lost, the worker resumes', async (t) => {
  await switchUnderLoad(t, (group) => group.killMaster());
});

test('a job whose lock the new master lacks after a failover runs again, and is not lost', async (t) => {
  const group = await startSentinelGroup();
  t.after(() => group.destroy());
  const env = { REDIS_SENTINELS: group.sentinelsEnv, REDIS_SENTINEL_MASTER: group.masterName };
  const listener = await startTestListener('redis://unused', env);
  t.after(() => listener.close());
  await untilReady(listener);
  let runs = 0;
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const worker = await startTestWorker(
    listener,
    { ...env, WORKER_LOCK_MS: '2000' },
    {
      '*': async () => {
        runs++;
        if (runs === 1) await released;
      },
    },
  );
  t.after(() => worker.close());

  const answer = await post(listener.url, '{"relatedtype":"invoice","event":"updated","relatedid":"1"}', json);
  const jobId = answer.body.jobId as string;
  await waitFor(() => runs === 1, 10_000, 'the job to start');
  const master = await group.failover();
  // The lock the old master held, as if it had not reached the replica before the switch.
  const admin = master.client();
  t.after(() => admin.disconnect());
  assert.equal(await admin.del(`${listener.config.queuePrefix}:${listener.config.queueName}:${jobId}:lock`), 1);
  release();
  await waitFor(async () => (await listener.queue.getJobState(jobId)) === 'completed', 30_000, 'the job to complete');
  assert.equal(runs, 2, 'run again once its lock was found missing');
});

test('doctor on Sentinel: the master through the Sentinels, the Sentinels and their quorum, the replicas', async (t) => {
  const group = await startSentinelGroup();
  t.after(() => group.destroy());
  const env = { REDIS_SENTINELS: group.sentinelsEnv, REDIS_URL: 'redis://unused', SPOOL_DIR: '/tmp' };
  const run = async (extra: Record<string, string> = {}) => {
    const lines: string[] = [];
    await doctor(loadConfig({ ...env, ...extra }), (line) => lines.push(line));
    return lines;
  };
  const master = await group.master();
  const healthy = await run();
  const line = (lines: string[], check: string) => lines.find((l) => new RegExp(`^\\w+ +${check}: `).test(l)) ?? '';
  assert.match(
    line(healthy, 'redis'),
    new RegExp(`^ok +redis: master "mymaster" of Sentinels .* \\(master at 127\\.0\\.0\\.1:${master.port}\\)`),
  );
  assert.match(
    line(healthy, 'redis sentinels'),
    /^ok +redis sentinels: 3 of 3 Sentinels answer; master "mymaster" at 127\.0\.0\.1:\d+, failover authorised/,
  );
  assert.match(
    line(healthy, 'redis replicas'),
    /^ok +redis replicas: 2 replicas connected; a 200 waits until 1 of them has/,
  );

  assert.match(line(await run({ REDIS_SENTINEL_MASTER: 'other' }), 'redis'), /^fail +redis: /);

  const [first, second] = group.sentinelServers;
  await first?.kill();
  await second?.kill();
  // The last Sentinel finds the others down after its down-after-milliseconds: then it cannot authorise a failover.
  let last = '';
  await waitFor(
    async () => {
      last = line(await run(), 'redis sentinels');
      return last.startsWith('fail');
    },
    15_000,
    'the remaining Sentinel to see it has no quorum',
  );
  assert.match(last, /^fail +redis sentinels: the Sentinels could not fail "mymaster" over: .*NOQUORUM/);
});

test('a connection through the Sentinels that ioredis ends in the middle of a reconnection connects again', async (t) => {
  const group = await startSentinelGroup();
  t.after(() => group.destroy());
  const config = loadConfig({ REDIS_SENTINELS: group.sentinelsEnv, REDIS_URL: 'redis://unused' });
  const client = createConnection(config.redis, { role: 'worker', name: 'follower' }) as Redis;
  client.on('error', () => undefined);
  t.after(() => client.disconnect());
  await client.set('before', '1');
  // What the failover detector does when +switch-master comes while the connection is being made again: the
  // connector is told to stop mid-way, and ioredis 6 ends the connection for good.
  const ended = new Promise((resolve) => client.once('end', resolve));
  client.stream.destroy();
  await waitFor(() => client.status === 'connecting' || client.status === 'reconnecting', 5000, 'a reconnection', 1);
  await waitFor(
    () => {
      if (client.status === 'connecting')
        (client as unknown as { connector: { disconnect(): void } }).connector.disconnect();
      return client.status === 'end';
    },
    5000,
    'ioredis to end the connection',
    1,
  );
  await ended;
  await waitFor(() => client.status === 'ready', 5000, 'the connection to be made again');
  assert.equal(await client.get('before'), '1');
  client.disconnect();
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(client.status, 'end', 'closed on purpose: stays closed');
});
