/**
 * Fan-out to several destinations (DESTINATIONS_FILE) through the real path: deliveries posted to a listener, queued
 * in a private redis-server, run by an in-process BullMQ worker whose `forward` sends to HTTP receivers on loopback,
 * each request checked with the `standardwebhooks` library against its destination's secret.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { Webhook } from 'standardwebhooks';
import { replay } from '../../src/cli/replay.ts';
import { stats } from '../../src/cli/stats.ts';
import { loadConfig } from '../../src/config/config.ts';
import { spawnCli } from '../helpers/cli.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { usePrivateRedis } from '../helpers/private-redis.ts';
import { type Answer, answerWith, type Receiver, startReceiver } from '../helpers/receiver.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const tempDir = useTempDirs('sellsy-destinations-');
const secrets = {
  ACCOUNTING_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
  CRM_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
  CRM_SECRET_OLD: `whsec_${randomBytes(32).toString('base64')}`,
};

const { redis, cleanup } = usePrivateRedis();

interface DestinationSpec {
  name: string;
  receiver: Receiver;
  secret?: string;
  secrets?: string[];
  events?: string[];
  maxPerSecond?: number;
  breakerFailures?: number;
  breakerProbeSeconds?: number;
  breakerMaxPauseSeconds?: number;
}

function destinationsFile(specs: DestinationSpec[]): string {
  const lines = ['destinations:'];
  for (const d of specs) {
    lines.push(`  - name: ${d.name}`, `    url: ${d.receiver.url}`);
    if (d.secret) lines.push(`    secret: \${${d.secret}}`);
    if (d.secrets) lines.push(`    secrets: [${d.secrets.map((s) => `"\${${s}}"`).join(', ')}]`);
    if (d.events) lines.push(`    events: ${JSON.stringify(d.events)}`);
    if (d.maxPerSecond) lines.push(`    max_per_second: ${d.maxPerSecond}`);
    if (d.breakerFailures) lines.push(`    breaker_failures: ${d.breakerFailures}`);
    if (d.breakerProbeSeconds) lines.push(`    breaker_probe_seconds: ${d.breakerProbeSeconds}`);
    if (d.breakerMaxPauseSeconds !== undefined) {
      lines.push(`    breaker_max_pause_seconds: ${d.breakerMaxPauseSeconds}`);
    }
  }
  const path = join(tempDir(), 'destinations.yaml');
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

async function receiver(answer?: Answer): Promise<Receiver> {
  const r = await startReceiver(answer);
  cleanup.push(() => r.close());
  return r;
}

interface Setup {
  listener: TestListener;
  worker: TestWorker;
  registry: Registry;
  workerEnv: Record<string, string>;
}

async function setup(specs: DestinationSpec[], listenerEnv: Record<string, string> = {}): Promise<Setup> {
  const jobEnv = { JOB_BACKOFF_MS: '20', ...listenerEnv };
  const listener = await startTestListener(redis.url, jobEnv);
  cleanup.push(() => listener.close());
  await untilReady(listener);
  const registry = new Registry();
  // The workers add the destinations' retry jobs: with the same attempts and backoff as the listener's jobs.
  const workerEnv = { ...jobEnv, ...secrets, DESTINATIONS_FILE: destinationsFile(specs) };
  const worker = await startTestWorker(listener, workerEnv, undefined, registry);
  cleanup.push(() => worker.close());
  return { listener, worker, registry, workerEnv };
}

function body(type: string, event: string, id: number): string {
  return JSON.stringify({ eventType: 'x', event, relatedtype: type, relatedid: String(id), corpid: '929' });
}

async function deliver(listener: TestListener, text: string): Promise<string> {
  const res = await post(listener.url, text, json);
  assert.equal(res.status, 200);
  return res.body.jobId as string;
}

async function settled(listener: TestListener, jobId: string, state: 'completed' | 'failed', timeoutMs = 20_000) {
  await waitFor(async () => (await listener.queue.getJobState(jobId)) === state, timeoutMs, `job ${jobId} ${state}`);
  const job = await listener.queue.getJob(jobId);
  assert.ok(job);
  return job;
}

/** The requests a receiver got, each verified with `secret`, as the forward body they carry. */
function verifiedBodies(target: Receiver, secret: string): { type: string; deliveryId: string }[] {
  return target.received.map((r) => {
    const headers = Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, String(v)]));
    return new Webhook(secret).verify(r.body, headers) as { type: string; deliveryId: string };
  });
}

function countBy<T>(items: T[], key: (t: T) => string): Map<string, number> {
  const out = new Map<string, number>();
  for (const item of items) out.set(key(item), (out.get(key(item)) ?? 0) + 1);
  return out;
}

/** The keys of the record of which destinations took which delivery. */
async function ledgerKeys(listener: TestListener): Promise<string[]> {
  const client = new Redis(redis.url);
  try {
    return await client.keys(`${listener.config.queuePrefix}:${listener.config.queueName}:destinations:*`);
  } finally {
    client.disconnect();
  }
}

async function ledgerOf(listener: TestListener, deliveryId: string) {
  const client = new Redis(redis.url);
  try {
    const key = `${listener.config.queuePrefix}:${listener.config.queueName}:destinations:${deliveryId}`;
    return { hash: await client.hgetall(key), ttl: await client.ttl(key) };
  } finally {
    client.disconnect();
  }
}

const deliveryIdOf = (r: { headers: Record<string, unknown> }) => String(r.headers['webhook-id']);

/** The id of the retry job a fan-out hands to a destination that did not take the delivery. */
const retryJobId = (deliveryId: string, destination: string) => `${deliveryId}-to-${destination}`;

/** The value of one sample of the exposition text, or null when absent. */
async function sample(registry: Registry, name: string, destination: string): Promise<number | null> {
  const text = await registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{destination="${destination}"}`));
  return line === undefined ? null : Number(line.split(' ').pop());
}

test('two destinations with different filters each receive exactly the matching events once, signed with their own secret', async () => {
  const accounting = await receiver();
  const crm = await receiver();
  const { listener, worker } = await setup([
    { name: 'accounting', receiver: accounting, secret: 'ACCOUNTING_SECRET', events: ['invoice.*', 'payment.*'] },
    { name: 'crm', receiver: crm, secret: 'CRM_SECRET', events: ['company.*'] },
  ]);
  const events = [
    body('invoice', 'created', 1),
    body('invoice', 'step', 2),
    body('company', 'updated', 3),
    body('payment', 'created', 4),
    body('contact', 'created', 5), // neither destination takes it: the job completes, nothing is sent
  ];
  const ids: string[] = [];
  for (const e of events) ids.push(await deliver(listener, e));
  for (const id of ids) await settled(listener, id, 'completed');

  const accountingBodies = verifiedBodies(accounting, secrets.ACCOUNTING_SECRET);
  assert.deepEqual(accountingBodies.map((b) => b.type).sort(), ['invoice.created', 'invoice.step', 'payment.created']);
  assert.deepEqual(
    verifiedBodies(crm, secrets.CRM_SECRET).map((b) => b.type),
    ['company.updated'],
  );
  // Once each, webhook-id = the delivery id, and a destination's secret does not verify the other's requests.
  assert.ok([...countBy(accounting.received, deliveryIdOf).values()].every((n) => n === 1));
  for (const b of accountingBodies) assert.ok(accounting.received.some((r) => deliveryIdOf(r) === b.deliveryId));
  assert.throws(() => verifiedBodies(crm, secrets.ACCOUNTING_SECRET));
  const started = worker.logs.find((l) => l.msg === 'worker started');
  assert.deepEqual(started?.destinations, ['accounting', 'crm']);
  // Every destination took its events at once: nothing was recorded, no retry job made.
  assert.deepEqual(await ledgerKeys(listener), []);
  assert.equal(await listener.queue.getJobCountByTypes('delayed', 'wait', 'failed'), 0);
});

test('an event sent to twelve destinations at once raises no listener-leak warning on the job signal', async () => {
  const sink = await receiver();
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  try {
    const names = Array.from({ length: 12 }, (_, i) => `d${i + 1}`);
    const { listener } = await setup(names.map((name) => ({ name, receiver: sink, secret: 'ACCOUNTING_SECRET' })));
    await settled(listener, await deliver(listener, body('invoice', 'created', 1)), 'completed');
    assert.equal(sink.received.length, 12);
    // Warnings are emitted on the next tick.
    await new Promise((r) => setImmediate(r));
  } finally {
    process.off('warning', onWarning);
  }
  assert.deepEqual(
    warnings.filter((w) => w.startsWith('MaxListenersExceededWarning')),
    [],
  );
});

test('a destination answering 500 three times per event: the other receives each event once and at once, the failing one each once in the end, through retry jobs of its own', async () => {
  const healthy = await receiver();
  const arrivals = new Map<string, number[]>();
  const failingAnswer: Answer = (res, index) => {
    const id = deliveryIdOf(flaky.received[index] ?? { headers: {} });
    const seen = arrivals.get(id) ?? [];
    seen.push(Date.now());
    arrivals.set(id, seen);
    res.statusCode = seen.length <= 3 ? 500 : 204;
    res.end();
  };
  const flaky = await receiver(failingAnswer);
  const healthyAt = new Map<string, number>();
  healthy.answer = (res, index) => {
    healthyAt.set(deliveryIdOf(healthy.received[index] ?? { headers: {} }), Date.now());
    res.end();
  };
  const { listener, worker, registry } = await setup(
    [
      { name: 'warehouse', receiver: healthy, secret: 'ACCOUNTING_SECRET' },
      // 15 failures in a row across the events: more than the breaker's default 10, which would pause crm.
      { name: 'crm', receiver: flaky, secret: 'CRM_SECRET', breakerFailures: 100 },
    ],
    { JOB_ATTEMPTS: '6', JOB_BACKOFF_MS: '100' },
  );
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push(await deliver(listener, body('invoice', 'step', 100 + i)));
  const jobs = await Promise.all(ids.map((id) => settled(listener, id, 'completed')));
  // The event's job completes at its first attempt; crm's part is a job of its own, with its own attempts.
  for (const job of jobs) assert.equal(job.attemptsMade, 1);
  const retries = await Promise.all(
    jobs.map((job) => settled(listener, retryJobId(job.data.deliveryId, 'crm'), 'completed')),
  );
  for (const retry of retries) {
    assert.equal(retry.data.onlyDestination, 'crm');
    assert.equal(retry.attemptsMade, 3, 'two 500s, then the 2xx');
  }
  assert.equal(await listener.queue.getJob(retryJobId(jobs[0]?.data.deliveryId ?? '', 'warehouse')), undefined);

  const healthyCounts = countBy(healthy.received, deliveryIdOf);
  const flakyCounts = countBy(flaky.received, deliveryIdOf);
  assert.equal(healthyCounts.size, 5);
  assert.ok(
    [...healthyCounts.values()].every((n) => n === 1),
    'the healthy destination got each event once',
  );
  assert.equal(flakyCounts.size, 5);
  assert.ok(
    [...flakyCounts.values()].every((n) => n === 4),
    'three 500s, then the 2xx, per event',
  );
  // Without delay: each event reached the healthy destination before the failing one's first retry of it.
  for (const [id, at] of healthyAt) {
    const retries = arrivals.get(id) ?? [];
    assert.ok(at < (retries[1] ?? 0), `event ${id} reached the healthy destination before the first retry`);
  }
  // Both secrets verify their own destination's requests, including the retries.
  assert.equal(verifiedBodies(healthy, secrets.ACCOUNTING_SECRET).length, 5);
  assert.equal(verifiedBodies(flaky, secrets.CRM_SECRET).length, 20);
  // Who took each event: both, the failing one through its retry job.
  for (const job of jobs) {
    assert.deepEqual((await ledgerOf(listener, job.data.deliveryId)).hash, { warehouse: 'sent', crm: 'sent' });
  }

  assert.equal(await sample(registry, 'sellsy_webhooks_destination_sent_total', 'warehouse'), 5);
  assert.equal(await sample(registry, 'sellsy_webhooks_destination_failed_total', 'warehouse'), 0);
  assert.equal(await sample(registry, 'sellsy_webhooks_destination_sent_total', 'crm'), 5);
  assert.equal(await sample(registry, 'sellsy_webhooks_destination_failed_total', 'crm'), 15);
  assert.equal(await sample(registry, 'sellsy_webhooks_destination_request_seconds_count', 'crm'), 20);
  const failures = worker.logs.filter((l) => l.msg === 'destination failed');
  assert.equal(failures.length, 15);
  assert.ok(failures.every((l) => l.destination === 'crm' && /answered 500/.test(String(l.err))));
});

test('when its attempts run out a destination has a dead letter of its own naming it, and a replay of it sends to it only', async () => {
  const healthy = await receiver();
  const down = await receiver(answerWith(503, 'maintenance'));
  const { listener, workerEnv } = await setup(
    [
      { name: 'accounting', receiver: healthy, secret: 'ACCOUNTING_SECRET' },
      { name: 'crm', receiver: down, secret: 'CRM_SECRET' },
    ],
    { JOB_ATTEMPTS: '3' },
  );
  const id = await deliver(listener, body('invoice', 'step', 200));
  const job = await settled(listener, id, 'completed');
  assert.equal(job.attemptsMade, 1, 'the event itself is done: accounting took it');
  const deadId = retryJobId(job.data.deliveryId, 'crm');
  const dead = await settled(listener, deadId, 'failed');
  assert.equal(dead.attemptsMade, 3);
  assert.equal(dead.name, 'invoice.step');
  assert.equal(dead.data.onlyDestination, 'crm');
  assert.match(
    dead.failedReason,
    /^\[forward \*\] destination still failing: crm \(forward to http:\/\/127\.0\.0\.1:\d+\/hooks\/sellsy answered 503 \(retryable\)\)$/,
  );
  assert.equal(healthy.received.length, 1);
  assert.equal(down.received.length, 4, 'the fan-out request, then its own three attempts');
  // Kept with the dead letter: JOB_KEEP_FAILED_SECONDS (30 days) and a day.
  const ledger = await ledgerOf(listener, job.data.deliveryId);
  assert.deepEqual(ledger.hash, { accounting: 'sent', crm: 'retrying' });
  assert.ok(ledger.ttl > 30 * 24 * 3600 && ledger.ttl <= 31 * 24 * 3600, `ttl ${ledger.ttl}`);

  down.answer = answerWith(200);
  const config = loadConfig({ ...workerEnv, REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName });
  const lines: string[] = [];
  const result = await replay(config, { ids: new Set([deadId]), name: null, since: null, until: null }, false, (l) =>
    lines.push(l),
  );
  assert.equal(result.replayed, 1, lines.join('\n'));
  await settled(listener, deadId, 'completed');
  assert.equal(down.received.length, 5, 'the replay sent to the destination that had failed');
  assert.equal(healthy.received.length, 1, 'and not again to the one that took the event');
  assert.equal(deliveryIdOf(down.received[4] ?? { headers: {} }), deliveryIdOf(healthy.received[0] ?? { headers: {} }));
  assert.equal((await ledgerOf(listener, job.data.deliveryId)).hash.crm, 'sent');
});

test('a destination refusing the event (4xx) gets a dead letter of its own at once, without a second request; its replay asks again', async () => {
  const healthy = await receiver();
  const refusing = await receiver(answerWith(404, 'no such hook'));
  const { listener, workerEnv } = await setup(
    [
      { name: 'accounting', receiver: healthy, secret: 'ACCOUNTING_SECRET' },
      { name: 'crm', receiver: refusing, secret: 'CRM_SECRET' },
    ],
    { JOB_ATTEMPTS: '5' },
  );
  const id = await deliver(listener, body('invoice', 'step', 300));
  const job = await settled(listener, id, 'completed');
  const deadId = retryJobId(job.data.deliveryId, 'crm');
  const dead = await settled(listener, deadId, 'failed');
  assert.equal(dead.attemptsMade, 1, 'a dead letter at once');
  assert.match(
    dead.failedReason,
    /^\[forward \*\] destination refused the event: crm \(.*answered 404: no such hook\)$/,
  );
  assert.equal(healthy.received.length, 1);
  assert.equal(refusing.received.length, 1, 'the refusal is not asked again by the retry job');

  refusing.answer = answerWith(200);
  const config = loadConfig({ ...workerEnv, REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName });
  const result = await replay(
    config,
    { ids: new Set([deadId]), name: null, since: null, until: null },
    false,
    () => {},
  );
  assert.equal(result.replayed, 1);
  await settled(listener, deadId, 'completed');
  assert.equal(refusing.received.length, 2, 'a replay asks the destination again');
  assert.equal(healthy.received.length, 1);
});

test('two secrets during a rotation: two signatures, each verifiable with its own secret', async () => {
  const target = await receiver();
  const other = await receiver();
  const { listener } = await setup([
    { name: 'crm', receiver: target, secrets: ['CRM_SECRET', 'CRM_SECRET_OLD'] },
    { name: 'accounting', receiver: other, secret: 'ACCOUNTING_SECRET' },
  ]);
  await settled(listener, await deliver(listener, body('company', 'created', 400)), 'completed');
  assert.equal(target.received.length, 1);
  const signature = String(target.received[0]?.headers['webhook-signature']);
  assert.match(signature, /^v1,[A-Za-z0-9+/=]+ v1,[A-Za-z0-9+/=]+$/);
  assert.equal(verifiedBodies(target, secrets.CRM_SECRET)[0]?.type, 'company.created');
  assert.equal(verifiedBodies(target, secrets.CRM_SECRET_OLD)[0]?.type, 'company.created');
  assert.throws(() => verifiedBodies(target, secrets.ACCOUNTING_SECRET), 'another secret does not verify it');
  // Each signature on its own verifies with its own secret only.
  const [sigNew, sigOld] = signature.split(' ');
  const request = target.received[0] ?? { headers: {}, body: '' };
  const headersWith = (sig: string | undefined) => ({
    'webhook-id': String(request.headers['webhook-id']),
    'webhook-timestamp': String(request.headers['webhook-timestamp']),
    'webhook-signature': String(sig),
  });
  assert.ok(new Webhook(secrets.CRM_SECRET).verify(request.body, headersWith(sigNew)));
  assert.ok(new Webhook(secrets.CRM_SECRET_OLD).verify(request.body, headersWith(sigOld)));
  assert.throws(() => new Webhook(secrets.CRM_SECRET).verify(request.body, headersWith(sigOld)));
});

test('an unknown delivery goes only to destinations whose events include unknown, and is a dead letter when none does', async () => {
  const all = await receiver();
  const invoices = await receiver();
  const first = await setup([
    { name: 'warehouse', receiver: all, secret: 'ACCOUNTING_SECRET' },
    { name: 'accounting', receiver: invoices, secret: 'CRM_SECRET', events: ['invoice.*'] },
  ]);
  await settled(first.listener, await deliver(first.listener, '{"hello":"not a Sellsy event"}'), 'completed');
  assert.deepEqual(
    verifiedBodies(all, secrets.ACCOUNTING_SECRET).map((b) => b.type),
    ['unknown'],
  );
  assert.equal(invoices.received.length, 0);

  const second = await setup([
    { name: 'accounting', receiver: invoices, secret: 'CRM_SECRET', events: ['invoice.*'] },
    { name: 'crm', receiver: all, secret: 'ACCOUNTING_SECRET', events: ['company.*'] },
  ]);
  const job = await settled(second.listener, await deliver(second.listener, '{"hello":"again"}'), 'failed');
  assert.match(job.failedReason, /no handler for "unknown"/);
  assert.equal(invoices.received.length, 0);
});

test('user handlers run once per job after the fan-out, not once per destination', async () => {
  const a = await receiver();
  const b = await receiver();
  const listener = await startTestListener(redis.url, { JOB_BACKOFF_MS: '20' });
  cleanup.push(() => listener.close());
  await untilReady(listener);
  const calls: string[] = [];
  const worker = await startTestWorker(
    listener,
    {
      ...secrets,
      DESTINATIONS_FILE: destinationsFile([
        { name: 'a', receiver: a, secret: 'ACCOUNTING_SECRET' },
        { name: 'b', receiver: b, secret: 'CRM_SECRET' },
      ]),
    },
    {
      // What each destination had received when the user handler ran: the fan-out comes first.
      '*': async () => {
        calls.push(`${a.received.length},${b.received.length}`);
      },
    },
  );
  cleanup.push(() => worker.close());
  await settled(listener, await deliver(listener, body('invoice', 'step', 500)), 'completed');
  assert.deepEqual(calls, ['1,1'], 'one run of the user handler, after both destinations took the event');
  assert.equal(a.received.length, 1);
  assert.equal(b.received.length, 1);
});

test('max_per_second spaces the requests to that destination without slowing the others', async () => {
  const arrivals =
    (target: { at: number[] }): Answer =>
    (res) => {
      target.at.push(Date.now());
      res.end();
    };
  const slowTimes = { at: [] as number[] };
  const fastTimes = { at: [] as number[] };
  const slow = await receiver(arrivals(slowTimes));
  const fast = await receiver(arrivals(fastTimes));
  const { listener } = await setup([
    { name: 'slow', receiver: slow, secret: 'ACCOUNTING_SECRET', maxPerSecond: 5 },
    { name: 'fast', receiver: fast, secret: 'CRM_SECRET' },
  ]);
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) ids.push(await deliver(listener, body('invoice', 'step', 600 + i)));
  await Promise.all(ids.map((id) => settled(listener, id, 'completed')));
  const span = (t: number[]) => Math.max(...t) - Math.min(...t);
  assert.equal(slowTimes.at.length, 6);
  assert.equal(fastTimes.at.length, 6);
  // Six requests at 5 a second: five intervals of 200 ms at least between the first and the last.
  assert.ok(span(slowTimes.at) >= 950, `slow span ${span(slowTimes.at)} ms`);
  assert.ok(span(fastTimes.at) < span(slowTimes.at) - 400, `fast span ${span(fastTimes.at)} ms`);
});

test('a worker stopped mid-fan-out hands the job back; the destination that took the event does not get it again', async () => {
  const quick = await receiver();
  const hanging = await receiver(() => {}); // never answers while the first worker runs
  const listener = await startTestListener(redis.url, { JOB_BACKOFF_MS: '20' });
  cleanup.push(() => listener.close());
  await untilReady(listener);
  const env = {
    ...secrets,
    SHUTDOWN_TIMEOUT_MS: '2000',
    FORWARD_TIMEOUT_MS: '60000',
    DESTINATIONS_FILE: destinationsFile([
      { name: 'quick', receiver: quick, secret: 'ACCOUNTING_SECRET' },
      { name: 'hanging', receiver: hanging, secret: 'CRM_SECRET' },
    ]),
  };
  const first = await startTestWorker(listener, env);
  const id = await deliver(listener, body('invoice', 'step', 700));
  await waitFor(() => quick.received.length === 1 && hanging.received.length === 1, 10_000, 'both requests made');
  await first.close();
  assert.ok(first.logs.some((l) => l.msg === 'job handed back at shutdown' && l.jobId === id));
  assert.equal(await listener.queue.getJobState(id), 'waiting');

  hanging.answer = answerWith(204);
  const second = await startTestWorker(listener, env);
  cleanup.push(() => second.close());
  await settled(listener, id, 'completed');
  assert.equal(quick.received.length, 1, 'the destination that took the event is not sent to again');
  assert.equal(hanging.received.length, 2);
});

test('a worker killed (kill -9) mid-fan-out: after a restart every destination has the event, every copy with the same webhook-id', async () => {
  const quick = await receiver();
  const hanging = await receiver((res, i) => {
    if (i > 0) res.end(); // the first request is left unanswered: the worker is killed while it waits
  });
  const listener = await startTestListener(redis.url, { JOB_BACKOFF_MS: '20' });
  cleanup.push(() => listener.close());
  await untilReady(listener);
  const env = {
    ...secrets,
    REDIS_URL: redis.url,
    QUEUE_NAME: listener.config.queueName,
    WORKER_LOCK_MS: '2000',
    LOG_LEVEL: 'warn',
    FORWARD_TIMEOUT_MS: '60000',
    DESTINATIONS_FILE: destinationsFile([
      { name: 'quick', receiver: quick, secret: 'ACCOUNTING_SECRET' },
      { name: 'hanging', receiver: hanging, secret: 'CRM_SECRET' },
    ]),
  };
  const first = spawnCli(['work'], env);
  cleanup.push(async () => first.child.kill('SIGKILL'));
  const id = await deliver(listener, body('invoice', 'step', 800));
  await waitFor(() => quick.received.length === 1 && hanging.received.length === 1, 20_000, 'mid-fan-out');
  first.child.kill('SIGKILL');
  await first.exited;

  const second = spawnCli(['work'], env);
  cleanup.push(async () => second.child.kill('SIGKILL'));
  try {
    await settled(listener, id, 'completed', 30_000);
    const job = await listener.queue.getJob(id);
    for (const target of [quick, hanging]) {
      assert.ok(target.received.length >= 1);
      assert.deepEqual(new Set(target.received.map(deliveryIdOf)), new Set([job?.data.deliveryId]));
    }
    assert.equal(hanging.received.length, 2);
  } finally {
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);
  }
});

test('replay --destination sends its dead letters to that destination only, and a later plain replay of the others sends to them only', async () => {
  const accounting = await receiver();
  const crm = await receiver(answerWith(503, 'maintenance'));
  const warehouse = await receiver(answerWith(503, 'down'));
  const { listener, workerEnv } = await setup(
    [
      { name: 'accounting', receiver: accounting, secret: 'ACCOUNTING_SECRET' },
      { name: 'crm', receiver: crm, secret: 'CRM_SECRET', events: ['invoice.*'] },
      { name: 'warehouse', receiver: warehouse, secret: 'ACCOUNTING_SECRET' },
    ],
    { JOB_ATTEMPTS: '2' },
  );
  const ids = [
    await deliver(listener, body('invoice', 'step', 300)),
    await deliver(listener, body('invoice', 'created', 301)),
    await deliver(listener, body('company', 'updated', 302)), // crm does not take it
  ];
  const jobs = [];
  for (const id of ids) jobs.push(await settled(listener, id, 'completed'));
  const deliveries = jobs.map((j) => j.data.deliveryId);
  const crmDead = deliveries.slice(0, 2).map((d) => retryJobId(d, 'crm'));
  const warehouseDead = deliveries.map((d) => retryJobId(d, 'warehouse'));
  for (const id of [...crmDead, ...warehouseDead]) await settled(listener, id, 'failed');
  assert.equal(await listener.queue.getJob(retryJobId(deliveries[2] ?? '', 'crm')), undefined);
  assert.equal(accounting.received.length, 3);
  assert.equal(crm.received.length, 6, 'two invoices: the fan-out request and two attempts each');
  const warehouseBefore = warehouse.received.length;
  assert.equal(warehouseBefore, 9);

  crm.answer = answerWith(200);
  const config = loadConfig({ ...workerEnv, REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName });
  const filter = { ids: new Set<string>(), name: null, since: null, until: null, destination: 'crm' };
  const lines: string[] = [];
  const result = await replay(config, filter, false, (l) => lines.push(l));
  assert.equal(result.replayed, 2, lines.join('\n'));
  await waitFor(async () => crm.received.length === 8, 20_000, 'crm caught up');
  const caughtUp = crm.received.slice(6).map(deliveryIdOf).sort();
  assert.deepEqual(caughtUp, deliveries.slice(0, 2).sort());
  assert.deepEqual(
    verifiedBodies(crm, secrets.CRM_SECRET)
      .slice(6)
      .map((b) => b.type)
      .sort(),
    ['invoice.created', 'invoice.step'],
  );
  // Give a wrongly sent request time to arrive: none reaches the others, and the dead letters stay for warehouse.
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(accounting.received.length, 3, 'nothing sent again to the destination that took them');
  assert.equal(warehouse.received.length, warehouseBefore, 'nothing sent to the destination still down');
  for (const id of warehouseDead) assert.equal(await listener.queue.getJobState(id), 'failed');
  assert.equal((await ledgerOf(listener, deliveries[0] ?? '')).hash.crm, 'sent');

  // Run again: crm has them all now, nothing is queued.
  const again = await replay(config, filter, true, () => undefined);
  assert.equal(again.matched, 0);

  // The warehouse is repaired: a plain replay of its dead letters sends to it, and to no other.
  warehouse.answer = answerWith(200);
  const plain = await replay(
    config,
    { ids: new Set(warehouseDead), name: null, since: null, until: null },
    false,
    () => {},
  );
  assert.equal(plain.replayed, 3);
  for (const id of warehouseDead) await settled(listener, id, 'completed');
  assert.equal(warehouse.received.length, warehouseBefore + 3);
  assert.equal(crm.received.length, 8, 'crm did not get them a second time');
  assert.equal(accounting.received.length, 3);
});

test('replay --destination --since brings a new destination up to date with the kept deliveries, from that time on', async () => {
  const accounting = await receiver();
  const warehouse = await receiver();
  const { listener, worker } = await setup([{ name: 'accounting', receiver: accounting, secret: 'ACCOUNTING_SECRET' }]);
  const old = await deliver(listener, body('invoice', 'step', 400));
  await settled(listener, old, 'completed');
  await new Promise((r) => setTimeout(r, 20));
  const since = Date.now();
  const recent = [
    await deliver(listener, body('invoice', 'step', 401)),
    await deliver(listener, body('payment', 'created', 402)),
    await deliver(listener, body('company', 'updated', 403)), // the warehouse does not take it
  ];
  const recentJobs = [];
  for (const id of recent) recentJobs.push(await settled(listener, id, 'completed'));
  assert.equal(accounting.received.length, 4);
  await worker.close();

  // The warehouse is added to the file: the workers restart with it, and it catches up.
  const workerEnv = {
    ...secrets,
    DESTINATIONS_FILE: destinationsFile([
      { name: 'accounting', receiver: accounting, secret: 'ACCOUNTING_SECRET' },
      { name: 'warehouse', receiver: warehouse, secret: 'CRM_SECRET', events: ['invoice.*', 'payment.*'] },
    ]),
  };
  const restarted = await startTestWorker(listener, workerEnv, undefined, new Registry());
  cleanup.push(() => restarted.close());
  const config = loadConfig({ ...workerEnv, REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName });
  const filter = { ids: new Set<string>(), name: null, since, until: null, destination: 'warehouse' };
  const dry: string[] = [];
  assert.equal((await replay(config, filter, true, (l) => dry.push(l))).matched, 2, dry.join('\n'));
  const result = await replay(config, filter, false, () => undefined);
  assert.equal(result.replayed, 2);
  await waitFor(async () => warehouse.received.length === 2, 20_000, 'warehouse caught up');
  assert.deepEqual(
    verifiedBodies(warehouse, secrets.CRM_SECRET)
      .map((b) => b.deliveryId)
      .sort(),
    [recentJobs[0]?.data.deliveryId, recentJobs[1]?.data.deliveryId].sort(),
    'the deliveries since the time it names, with their own webhook-id, not the older one',
  );
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(accounting.received.length, 4, 'the destination that had them gets nothing again');
  assert.equal(warehouse.received.length, 2);
});

test('a destination down for good: its own dead letters only, each attempt a real request (none spent while the breaker is open), the other unaffected; a probe that succeeds closes it', async () => {
  const accounting = await receiver();
  const down = await receiver(answerWith(503, 'down'));
  const { listener, worker, registry, workerEnv } = await setup(
    [
      { name: 'accounting', receiver: accounting, secret: 'ACCOUNTING_SECRET' },
      { name: 'crm', receiver: down, secret: 'CRM_SECRET', breakerFailures: 2, breakerProbeSeconds: 1 },
    ],
    { JOB_ATTEMPTS: '3' },
  );
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push(await deliver(listener, body('invoice', 'step', 500 + i)));
  const jobs = [];
  for (const id of ids) jobs.push(await settled(listener, id, 'completed'));
  assert.equal(accounting.received.length, 4, 'the other destination took each event once, at once');
  const dead = [];
  for (const job of jobs) dead.push(await settled(listener, retryJobId(job.data.deliveryId, 'crm'), 'failed', 90_000));
  // Each attempt of crm's jobs was a probe answered 503: the time paused spent none of them.
  for (const job of dead) {
    assert.equal(job.attemptsMade, 3);
    assert.match(job.failedReason, /^\[forward \*\] destination still failing: crm \(forward to .* answered 503/);
  }
  const fanOutRequests = down.received.length - 3 * dead.length;
  assert.ok(fanOutRequests >= 2 && fanOutRequests <= 4, `${down.received.length} requests in all`);
  assert.ok(worker.logs.some((l) => l.msg === 'job postponed'));
  assert.equal(await sample(registry, 'sellsy_webhooks_destination_breaker_open', 'crm'), 1);
  assert.equal(await sample(registry, 'sellsy_webhooks_destination_breaker_open', 'accounting'), 0);
  assert.ok(
    worker.logs.some((l) => l.msg === 'circuit breaker open: requests paused, probing' && l.destination === 'crm'),
  );
  const client = new Redis(redis.url);
  cleanup.push(async () => client.disconnect());
  const key = `${listener.config.queuePrefix}:${listener.config.queueName}:breaker:crm`;
  assert.equal(await client.hget(key, 'open'), '1');

  // stats: a line per destination, with its breaker and its dead letters.
  const config = loadConfig({ ...workerEnv, REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName });
  const lines: string[] = [];
  assert.equal(await stats(config, (l) => lines.push(l)), 0);
  assert.ok(lines.includes('destination   accounting: breaker closed; no dead letter'), lines.join('\n'));
  assert.ok(
    lines.some((l) =>
      /^destination {3}crm: breaker OPEN after \d+ failures \(paused, probing\); 4 dead letters still failing there \(sellsy-webhooks replay --destination crm\)$/.test(
        l,
      ),
    ),
    lines.join('\n'),
  );

  // Repaired: the next event's crm job waits for the probe, which succeeds and closes the breaker.
  down.answer = answerWith(200);
  const before = down.received.length;
  const next = await settled(listener, await deliver(listener, body('invoice', 'step', 600)), 'completed');
  await settled(listener, retryJobId(next.data.deliveryId, 'crm'), 'completed', 20_000);
  assert.equal(await client.exists(key), 0, 'closed: the state is gone');
  assert.equal(await sample(registry, 'sellsy_webhooks_destination_breaker_open', 'crm'), 0);
  assert.ok(worker.logs.some((l) => l.msg === 'circuit breaker closed: the destination answered'));
  assert.equal(down.received.length, before + 1);
  // Closed: an event goes at once, from its own job.
  const last = await settled(listener, await deliver(listener, body('invoice', 'step', 601)), 'completed');
  assert.equal(down.received.length, before + 2, 'one request per event once closed');
  assert.equal(await listener.queue.getJob(retryJobId(last.data.deliveryId, 'crm')), undefined);
  // And its dead letters catch up.
  const result = await replay(
    config,
    { ids: new Set(), name: null, since: null, until: null, destination: 'crm' },
    false,
    () => {},
  );
  assert.equal(result.replayed, 4);
  await waitFor(async () => down.received.length === before + 6, 20_000, 'crm caught up');
});

test('breaker_max_pause_seconds: a job that would wait past it spends its attempts instead, without requests', async () => {
  const accounting = await receiver();
  const down = await receiver(answerWith(503, 'down'));
  const { listener } = await setup(
    [
      { name: 'accounting', receiver: accounting, secret: 'ACCOUNTING_SECRET' },
      {
        name: 'crm',
        receiver: down,
        secret: 'CRM_SECRET',
        breakerFailures: 1,
        breakerProbeSeconds: 600,
        breakerMaxPauseSeconds: 5,
      },
    ],
    { JOB_ATTEMPTS: '3' },
  );
  const job = await settled(listener, await deliver(listener, body('invoice', 'step', 700)), 'completed');
  const dead = await settled(listener, retryJobId(job.data.deliveryId, 'crm'), 'failed');
  assert.equal(dead.attemptsMade, 3);
  assert.match(
    dead.failedReason,
    /^\[forward \*\] destination still failing: crm \(destination crm paused: circuit breaker open after 1 consecutive failures, next probe in \d+ s \(no request sent\)\)$/,
  );
  assert.equal(down.received.length, 1, 'only the fan-out request: the breaker opened at once');
  assert.equal(accounting.received.length, 1);
});
