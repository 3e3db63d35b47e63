/**
 * REDIS_WAIT_AOF: the 200 waits until Redis has fsynced the job to its AOF, one WAITAOF shared by concurrent
 * deliveries; against a real Valkey 8 (which has WAITAOF) and the machine's Redis 7.0 (which has not).
 */

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { startRedis, startValkey } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

async function listener(redisUrl: string, env: Record<string, string>): Promise<TestListener> {
  const l = await startTestListener(redisUrl, env);
  cleanup.push(() => l.close());
  return l;
}

function commandCalls(info: string, command: string): number {
  return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
}

test('with REDIS_WAIT_AOF=true, concurrent deliveries are confirmed after a shared WAITAOF, and not spooled', async () => {
  const valkey = await startValkey();
  cleanup.push(() => valkey.destroy());
  const l = await listener(valkey.url, { REDIS_WAIT_AOF: 'true', ACK_BUDGET_MS: '3000' });
  await untilReady(l);
  const admin = valkey.client();
  cleanup.push(async () => admin.disconnect());
  await admin.config('RESETSTAT');

  const answers = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      post(l.url, `{"relatedtype":"invoice","event":"step","relatedid":"${i}"}`, {
        'content-type': 'application/json',
      }),
    ),
  );
  for (const a of answers) {
    assert.equal(a.status, 200);
    assert.equal(a.body.spooled, undefined, 'confirmed by Redis, not by the spool');
  }
  const info = (await admin.info('commandstats')) as string;
  const waits = commandCalls(info, 'waitaof');
  assert.ok(waits >= 1, 'WAITAOF was used');
  assert.ok(waits < 50, `50 deliveries shared ${waits} WAITAOF calls`);
  assert.equal((await l.queue.getJobCounts('waiting')).waiting, 50);
});

test('REDIS_WAIT_AOF=true on a Redis without WAITAOF: a clear error, and deliveries are kept in the spool', async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const l = await listener(redis.url, { REDIS_WAIT_AOF: 'true' });
  await waitFor(() => l.queueProducer.health().lastError !== null, 5000, 'the producer to report an error', 20);
  const health = l.queueProducer.health();
  assert.equal(health.ready, false);
  assert.match(health.lastError ?? '', /REDIS_WAIT_AOF=true needs WAITAOF \(Redis >= 7.2 or Valkey >= 8\)/);
  assert.match(health.lastError ?? '', /appendfsync always/);
  const answer = await post(l.url, '{"relatedtype":"a","event":"b"}', { 'content-type': 'application/json' });
  assert.equal(answer.status, 200);
  assert.equal(answer.body.spooled, true);
  const ready = (await (await fetch(`${l.url}/readyz`)).json()) as { ok: boolean };
  assert.equal(ready.ok, true, 'ready through the spool');
  const line = l.logs.find((entry) => entry.msg === 'readiness: ready, with errors');
  assert.match(String((line?.redis as { lastError?: string } | undefined)?.lastError), /WAITAOF/);
});

test('REDIS_WAIT_AOF=true with AOF off: the same clear error until AOF is turned on, then jobs are queued', async () => {
  const valkey = await startValkey(['--appendonly', 'no']);
  cleanup.push(() => valkey.destroy());
  const l = await listener(valkey.url, { REDIS_WAIT_AOF: 'true' });
  await waitFor(() => l.queueProducer.health().lastError !== null, 5000, 'the producer to report an error', 20);
  assert.match(l.queueProducer.health().lastError ?? '', /appendonly/);
  const spooled = await post(l.url, '{"relatedtype":"a","event":"before"}', { 'content-type': 'application/json' });
  assert.equal(spooled.body.spooled, true);
  const admin = valkey.client();
  cleanup.push(async () => admin.disconnect());
  await admin.config('SET', 'appendonly', 'yes');
  await untilReady(l, 15_000);
  await l.spooling?.drained(10_000);
  assert.ok(await l.queue.getJob(spooled.body.jobId as string), 'the spooled delivery reached the queue');
});
