/**
 * REDIS_WAIT_REPLICAS: a 200 means the delivery is on the master and on N replicas (WAIT N, or WAITAOF 1 N with
 * REDIS_WAIT_AOF), one confirmation shared by concurrent deliveries; fewer replicas in time, and the delivery is
 * spooled too, still one job. Against real servers: a Redis 7.0 master and replica, a Valkey 8 pair for WAITAOF.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { GroupConfirm, targetOf } from '../../src/queue/confirm.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { type RedisServer, startRedis, startValkey } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

const JSON_TYPE = { 'content-type': 'application/json' };
/** Budgets for tests that check what Redis confirms: a loaded machine's slow fsync does not spool a delivery. */
const PATIENT = { ACK_BUDGET_MS: '5000', ENQUEUE_TIMEOUT_MS: '5000' };

/** A master and one replica of it, linked. */
async function pair(start: (args?: string[]) => Promise<RedisServer>): Promise<[RedisServer, RedisServer]> {
  const master = await start();
  cleanup.push(() => master.destroy());
  const replica = await start(['--replicaof', '127.0.0.1', String(master.port)]);
  cleanup.push(() => replica.destroy());
  const admin = master.client();
  try {
    await waitFor(async () => /slave0:.*state=online/.test(await admin.info('replication')), 10_000, 'the replica');
  } finally {
    admin.disconnect();
  }
  return [master, replica];
}

async function listener(redisUrl: string, env: Record<string, string>): Promise<TestListener> {
  const l = await startTestListener(redisUrl, env);
  cleanup.push(() => l.close());
  await untilReady(l);
  return l;
}

function commandCalls(info: string, command: string): number {
  return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
}

test('REDIS_WAIT_REPLICAS=1: each 200 comes once a replica has the job, and concurrent deliveries share a WAIT', async () => {
  const [master, replica] = await pair(startRedis);
  const l = await listener(master.url, { REDIS_WAIT_REPLICAS: '1', ...PATIENT });
  const admin = master.client();
  const onReplica = replica.client();
  cleanup.push(async () => {
    admin.disconnect();
    onReplica.disconnect();
  });
  await admin.config('RESETSTAT');
  // Replication is asynchronous: without the WAIT, a 200 can come before the replica has the job.
  const answers = await Promise.all(
    Array.from({ length: 40 }, (_, i) =>
      post(l.url, `{"relatedtype":"invoice","event":"updated","relatedid":"${i}"}`, JSON_TYPE),
    ),
  );
  const prefix = `${l.config.queuePrefix}:${l.config.queueName}`;
  for (const a of answers) {
    assert.equal(a.status, 200);
    assert.equal(a.body.spooled, undefined, 'confirmed in Redis, not by the spool');
    // Read on the replica right after the 200: the job is there already.
    assert.equal(await onReplica.exists(`${prefix}:${a.body.jobId}`), 1, `job ${a.body.jobId} on the replica`);
  }
  const waits = commandCalls(await admin.info('commandstats'), 'wait');
  assert.ok(waits >= 1 && waits < 40, `40 deliveries shared ${waits} WAIT calls`);
});

test('a replica that does not confirm within the ack budget: the delivery is spooled too, and becomes one job', async () => {
  const [master, replica] = await pair(startRedis);
  const l = await listener(master.url, { REDIS_WAIT_REPLICAS: '1', ACK_BUDGET_MS: '50' });
  replica.freeze();
  let answer: Awaited<ReturnType<typeof post>>;
  try {
    answer = await post(l.url, '{"relatedtype":"client","event":"created","relatedid":"7"}', JSON_TYPE);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.spooled, true, 'kept by the spool: no replica confirmed it');
    assert.equal(l.spooling?.spool.status().depth, 1);
  } finally {
    replica.thaw();
  }
  await l.spooling?.drained(15_000);
  const counts = await l.queue.getJobCounts('waiting', 'active', 'completed', 'failed');
  assert.equal(counts.waiting, 1, 'the write Redis took and the spooled copy are one job');
  assert.ok(await l.queue.getJob(answer.body.jobId as string));
  const line = l.logs.find((e) => e.msg === 'delivery' && e.jobId === answer.body.jobId);
  assert.equal(line?.reason, 'replicas', 'the reason is logged');
  const errors = await l.metrics.registry.getSingleMetricAsString('sellsy_webhooks_enqueue_errors_total');
  assert.match(errors, /reason="replicas"\} 1/);
});

test('REDIS_WAIT_AOF with REDIS_WAIT_REPLICAS=1 on Valkey: WAITAOF 1 1, the job fsynced on the master and on a replica', async () => {
  const [master] = await pair((args) => startValkey(['--appendfsync', 'always', ...(args ?? [])]));
  const l = await listener(master.url, { REDIS_WAIT_REPLICAS: '1', REDIS_WAIT_AOF: 'true', ...PATIENT });
  const admin = master.client();
  cleanup.push(async () => admin.disconnect());
  await admin.config('RESETSTAT');
  const answers = await Promise.all(
    Array.from({ length: 20 }, (_, i) => post(l.url, `{"relatedtype":"a","event":"b","relatedid":"${i}"}`, JSON_TYPE)),
  );
  for (const a of answers) assert.equal(a.body.spooled, undefined);
  const stats = await admin.info('commandstats');
  assert.ok(commandCalls(stats, 'waitaof') >= 1, 'WAITAOF was used');
  assert.equal(commandCalls(stats, 'wait'), 0, 'WAITAOF 1 1 covers the replica: no separate WAIT');
});

test('a confirmation never crosses connections: writes sent before a reconnection are refused, not confirmed', async () => {
  const [master] = await pair(startRedis);
  const client = new Redis(master.url, { maxRetriesPerRequest: 0 });
  client.on('error', () => undefined);
  cleanup.push(async () => client.disconnect());
  await client.ping();
  const confirm = new GroupConfirm({ aof: false, replicas: 1, timeoutMs: 1000 });
  const before = targetOf(client);
  await client.set('written-before', '1');
  await confirm.after(before);
  // The connection closes and comes back: the new one has written nothing, and WAIT on it would answer at once.
  const closed = new Promise((resolve) => client.once('close', resolve));
  client.stream.destroy();
  await closed;
  await waitFor(() => client.status === 'ready', 5000, 'the reconnection', 20);
  await assert.rejects(confirm.after(before), (err: Error & { reason?: string }) => err.reason === 'replicas');
  await client.set('written-after', '1');
  await confirm.after(targetOf(client));
});
