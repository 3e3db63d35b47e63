/**
 * The destinations' retry jobs with RECORD_ORDER=latest, and the cost of the circuit breakers, through the real path:
 * deliveries posted to a listener, queued in a private redis-server, run by an in-process worker whose `forward`
 * sends to HTTP receivers on loopback, each request checked with the `standardwebhooks` library.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { Webhook } from 'standardwebhooks';
import { recordQueueName } from '../../src/queue/records.ts';
import { type FakeSellsy, startFakeSellsy } from '../helpers/fake-sellsy.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { usePrivateRedis } from '../helpers/private-redis.ts';
import { type Answer, type Receiver, startReceiver } from '../helpers/receiver.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const tempDir = useTempDirs('sellsy-destination-retries-');
const secrets = {
  A_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
  B_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
  C_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
};

const { redis, cleanup } = usePrivateRedis();

async function receiver(answer?: Answer): Promise<Receiver> {
  const r = await startReceiver(answer);
  cleanup.push(() => r.close());
  return r;
}

async function setup(
  destinations: { name: string; receiver: Receiver; secret: keyof typeof secrets; extra?: string[] }[],
  env: Record<string, string>,
): Promise<{ listener: TestListener; worker: TestWorker; file: string }> {
  const jobEnv = { JOB_BACKOFF_MS: env.JOB_BACKOFF_MS ?? '150', JOB_ATTEMPTS: '8' };
  const listener = await startTestListener(redis.url, jobEnv);
  cleanup.push(() => listener.close());
  await untilReady(listener);
  const lines = ['destinations:'];
  for (const d of destinations) {
    lines.push(`  - name: ${d.name}`, `    url: ${d.receiver.url}`, `    secret: \${${d.secret}}`, ...(d.extra ?? []));
  }
  const file = join(tempDir(), 'destinations.yaml');
  writeFileSync(file, `${lines.join('\n')}\n`);
  const worker = await startTestWorker(listener, { ...jobEnv, ...secrets, ...env, DESTINATIONS_FILE: file });
  cleanup.push(() => worker.close());
  return { listener, worker, file };
}

/** A fake Sellsy API for `sellsy-fetch`, and the worker's variables pointing at it. */
async function sellsy(): Promise<{ fake: FakeSellsy; env: Record<string, string> }> {
  const fake = await startFakeSellsy();
  cleanup.push(() => fake.close());
  return {
    fake,
    env: {
      SELLSY_CLIENT_ID: fake.clientId,
      SELLSY_CLIENT_SECRET: fake.clientSecret,
      SELLSY_API_URL: fake.apiUrl,
      SELLSY_TOKEN_URL: fake.tokenUrl,
    },
  };
}

function body(event: string, id: number): string {
  return JSON.stringify({ eventType: 'x', event, relatedtype: 'invoice', relatedid: String(id), corpid: '929' });
}

async function deliver(listener: TestListener, text: string): Promise<string> {
  const res = await post(listener.url, text, json);
  assert.equal(res.status, 200);
  return res.body.jobId as string;
}

/** The deliveries a receiver took (2xx) and every request's delivery, in arrival order, each verified. */
function verified(target: Receiver, secret: string): string[] {
  return target.received.map((r) => {
    const headers = Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, String(v)]));
    return (new Webhook(secret).verify(r.body, headers) as { deliveryId: string }).deliveryId;
  });
}

test('RECORD_ORDER=latest: a destination retrying a record gets the later events of that record through its retry job, one request at a time and never an older event after a newer', async () => {
  // crm fails its first request only; each answer takes a while, so that overlapping requests would be seen.
  let inFlight = 0;
  let mostInFlight = 0;
  const crmStatus: number[] = [];
  const crm = await receiver((res, index) => {
    inFlight++;
    mostInFlight = Math.max(mostInFlight, inFlight);
    setTimeout(() => {
      inFlight--;
      res.statusCode = index < 1 ? 500 : 204;
      crmStatus[index] = res.statusCode;
      res.end();
    }, 30);
  });
  const accounting = await receiver();
  const { listener, worker } = await setup(
    [
      { name: 'accounting', receiver: accounting, secret: 'A_SECRET' },
      { name: 'crm', receiver: crm, secret: 'B_SECRET' },
    ],
    // The retry job starts after 300 to 600 ms: the later events reach the record stage before it.
    { RECORD_ORDER: 'latest', JOB_BACKOFF_MS: '600' },
  );
  const first = await deliver(listener, body('created', 900));
  await waitFor(() => crmStatus.length >= 1, 10_000, 'crm refused the first event');
  // While crm's retry job of the record waits for its backoff, two later events of the same record.
  const later = [await deliver(listener, body('step', 900)), await deliver(listener, body('sent', 900))];
  const ids = [first, ...later];
  const deliveries: string[] = [];
  for (const id of ids) {
    await waitFor(async () => (await listener.queue.getJobState(id)) === 'completed', 10_000, `job ${id}`);
    deliveries.push((await listener.queue.getJob(id))?.data.deliveryId ?? '');
  }
  await waitFor(() => crmStatus.includes(204), 20_000, 'crm took the record');
  await waitFor(
    async () => (await listener.queue.getJobCountByTypes('wait', 'delayed', 'active', 'prioritized')) === 0,
    20_000,
    'no job left',
  );

  const order = (list: string[]) => list.map((d) => deliveries.indexOf(d));
  const crmSeen = verified(crm, secrets.B_SECRET);
  assert.equal(mostInFlight, 1, 'never two requests of one record to crm at once');
  const crmOrder = order(crmSeen);
  assert.ok(
    crmOrder.every((n, i) => n >= 0 && (i === 0 || n >= (crmOrder[i - 1] ?? 0))),
    `crm got the events in order: ${crmOrder}`,
  );
  const took = crmSeen.filter((_, i) => crmStatus[i] === 204);
  assert.equal(took.at(-1), deliveries[2], 'crm took the latest event of the record last');
  assert.equal(new Set(took).size, took.length, 'and no event twice');
  assert.ok(!took.includes(deliveries[0] ?? ''), 'the retry of the first event went out as a later one');
  assert.ok(worker.logs.some((l) => l.msg === 'destination retry: sending a later event'));
  // The healthy destination took the record's events in order too, the latest last.
  const accountingOrder = order(verified(accounting, secrets.A_SECRET));
  assert.ok(
    accountingOrder.every((n, i) => i === 0 || n > (accountingOrder[i - 1] ?? 0)),
    `${accountingOrder}`,
  );
  assert.equal(accountingOrder.at(-1), 2);
  assert.equal(accountingOrder[0], 0);
  const client = new Redis(redis.url);
  cleanup.push(async () => client.disconnect());
  const base = `${listener.config.queuePrefix}:${recordQueueName(listener.config.queueName)}`;
  assert.equal(await client.zcard(`${base}:failed`), 0);
});

test('the breakers of all the destinations of a job are read with one Redis script call', async () => {
  const targets = await Promise.all([receiver(), receiver(), receiver()]);
  const { listener } = await setup(
    [
      { name: 'a', receiver: targets[0] as Receiver, secret: 'A_SECRET' },
      { name: 'b', receiver: targets[1] as Receiver, secret: 'B_SECRET' },
      { name: 'c', receiver: targets[2] as Receiver, secret: 'C_SECRET' },
    ],
    {},
  );
  const settled = async (id: string) =>
    waitFor(async () => (await listener.queue.getJobState(id)) === 'completed', 10_000, `job ${id}`);
  // The first job loads the script (ioredis tries EVALSHA, then EVAL): not counted.
  await settled(await deliver(listener, body('created', 1)));

  const client = new Redis(redis.url);
  const monitor = await client.monitor();
  cleanup.push(async () => {
    monitor.disconnect();
    client.disconnect();
  });
  const breakerCalls: string[][] = [];
  monitor.on('monitor', (_time: string, args: string[]) => {
    // Only the calls from clients: the monitor also shows what a script runs, as coming from Lua.
    if (/^eval/i.test(args[0] ?? '') && args.some((a) => a.includes(':breaker:'))) breakerCalls.push(args);
  });
  await settled(await deliver(listener, body('created', 2)));
  await new Promise((r) => setTimeout(r, 200)); // the monitor's feed lags the commands a little
  assert.equal(breakerCalls.length, 1, JSON.stringify(breakerCalls));
  const call = breakerCalls[0] ?? [];
  assert.equal(call[0]?.toLowerCase(), 'evalsha');
  assert.equal(call[2], '3', 'the three destinations in one call');
  for (const t of targets) assert.equal(t.received.length, 2);
});

test('while a breaker is open the retry jobs waiting for it call the Sellsy API only to send: one object fetched per request made', async () => {
  const { fake, env } = await sellsy();
  const events = 8;
  for (let i = 0; i < events; i++) fake.put('invoices', String(300 + i), { id: 300 + i });
  // crm is down for its first three requests: the event job's, then two probes; the third probe closes the breaker.
  const crm = await receiver((res, index) => {
    res.statusCode = index < 3 ? 503 : 204;
    res.end();
  });
  const accounting = await receiver();
  const { listener, worker } = await setup(
    [
      { name: 'accounting', receiver: accounting, secret: 'A_SECRET' },
      {
        name: 'crm',
        receiver: crm,
        secret: 'B_SECRET',
        extra: ['    breaker_failures: 1', '    breaker_probe_seconds: 1'],
      },
    ],
    { ...env, JOB_BACKOFF_MS: '50' },
  );
  const ids: string[] = [];
  // The first alone, so that the breaker is open when the others come.
  ids.push(await deliver(listener, body('updated', 300)));
  await waitFor(() => crm.received.length === 1, 10_000, 'the first request to crm');
  for (let i = 1; i < events; i++) ids.push(await deliver(listener, body('updated', 300 + i)));
  for (const id of ids) {
    await waitFor(async () => (await listener.queue.getJobState(`${id}-to-crm`)) === 'completed', 30_000, id);
  }
  const fetches = fake.apiRequests().filter((r) => r.path.startsWith('/v2/invoices')).length;
  // One fetch per event job (shared by both destinations), then one per run of a retry job that made a request; a run
  // that meets the open breaker fetches nothing. A run that reads the breaker just before another takes the probe
  // fetches and is postponed by `forward` (rare: the wake-ups are spread), hence the margin.
  const retryFetches = fetches - events;
  const retryRequests = crm.received.length - 1;
  assert.equal(accounting.received.length, events);
  assert.ok(retryRequests >= events, `every event reached crm: ${retryRequests}`);
  assert.ok(
    worker.logs.filter((l) => l.msg === 'job postponed').length >= events - 1,
    'the retry jobs waited for the breaker',
  );
  assert.ok(
    retryFetches <= retryRequests + 3,
    `${retryFetches} Sellsy fetches by retry jobs for ${retryRequests} requests to crm`,
  );
});

test('RECORD_ORDER=latest with sellsy-fetch: a deletion handed to a pending retry job is what the job sends, without a fetch', async () => {
  const { fake, env } = await sellsy();
  fake.put('invoices', '401', { id: 401 });
  const crm = await receiver((res, index) => {
    res.statusCode = index === 0 ? 503 : 204;
    res.end();
  });
  const accounting = await receiver();
  const { listener } = await setup(
    [
      { name: 'accounting', receiver: accounting, secret: 'A_SECRET' },
      { name: 'crm', receiver: crm, secret: 'B_SECRET' },
    ],
    // The retry job starts after the deletion arrived.
    { ...env, RECORD_ORDER: 'latest', JOB_BACKOFF_MS: '1500' },
  );
  const d1 = await deliver(listener, body('updated', 401));
  await waitFor(() => crm.received.length === 1, 10_000, 'crm failed the update');
  fake.remove('invoices', '401');
  const d2 = await deliver(listener, body('deleted', 401));
  await waitFor(() => accounting.received.length === 2, 10_000, 'accounting took both');
  await waitFor(
    async () => ['completed', 'failed'].includes(await listener.queue.getJobState(`${d1}-to-crm`)),
    20_000,
    'the retry job settled',
  );
  const retry = await listener.queue.getJob(`${d1}-to-crm`);
  assert.equal(await retry?.getState(), 'completed', retry?.failedReason);
  assert.deepEqual(verified(crm, secrets.B_SECRET), [d1, d2]);
  const sent = JSON.parse(crm.received[1]?.body ?? '{}') as { event: { event: string }; object: unknown };
  assert.equal(sent.event.event, 'deleted');
  assert.equal(sent.object, null);
  // The update's fetch only: the deletion is never fetched, by its job nor by the retry job.
  assert.equal(fake.apiRequests().filter((r) => r.path.startsWith('/v2/invoices')).length, 1);
});

test('RECORD_ORDER=latest: a reload down to one destination keeps its pending retry job and its order', async () => {
  const crm = await receiver((res, index) => {
    res.statusCode = index === 0 ? 503 : 204;
    res.end();
  });
  const accounting = await receiver();
  const { listener, worker, file } = await setup(
    [
      { name: 'crm', receiver: crm, secret: 'B_SECRET' },
      { name: 'accounting', receiver: accounting, secret: 'A_SECRET' },
    ],
    // The retry job starts after the reload and the second event.
    { RECORD_ORDER: 'latest', JOB_BACKOFF_MS: '1500' },
  );
  const d1 = await deliver(listener, body('created', 501));
  await waitFor(() => crm.received.length === 1, 10_000, 'crm failed the first event');
  // crm alone: the first destination's three lines.
  writeFileSync(file, `${readFileSync(file, 'utf8').split('\n').slice(0, 4).join('\n')}\n`);
  const outcome = worker.reloadDestinations('test');
  assert.deepEqual(outcome?.result === 'ok' && outcome.destinations, ['crm']);
  const d2 = await deliver(listener, body('step', 501));
  await waitFor(
    async () => ['completed', 'failed'].includes(await listener.queue.getJobState(`${d1}-to-crm`)),
    20_000,
    'the retry job settled',
  );
  await waitFor(async () => (await listener.queue.getJobCounts('delayed')).delayed === 0, 10_000, 'no job delayed');
  await new Promise((r) => setTimeout(r, 300)); // any request still to come
  // The second event went through the pending retry job, the newest event: nothing older after it, nothing twice.
  assert.deepEqual(verified(crm, secrets.B_SECRET), [d1, d2]);
  const processed = worker.logs.find((l) => l.msg === 'job processed' && l.jobId === `${d1}-to-crm`);
  assert.equal(processed?.outcome, `completed: sent the later delivery ${d2} to crm`);
  assert.equal(accounting.received.length, 1);
});
