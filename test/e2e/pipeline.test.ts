/**
 * The whole path with real parts: a delivery posted over HTTP to the listener, queued in a private redis-server, run
 * by a worker (in-process, or a real `sellsy-webhooks work` process where a crash is tested) through the built-in
 * handlers: `postgres` into the machine's PostgreSQL (a schema per test), `forward` to an HTTP receiver that checks
 * the Standard Webhooks signature, `sellsy-fetch` against the fake Sellsy API.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Queue } from 'bullmq';
import { Registry } from 'prom-client';
import { Webhook } from 'standardwebhooks';
import { recordQueueName } from '../../src/queue/records.ts';
import { runCli, spawnCli } from '../helpers/cli.ts';
import { type FakeSellsy, startFakeSellsy } from '../helpers/fake-sellsy.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { type TempSchema, tempSchema } from '../helpers/postgres.ts';
import { usePrivateRedis } from '../helpers/private-redis.ts';
import { answerWith, type Receiver, startReceiver } from '../helpers/receiver.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, recordBody, startTestWorker } from '../helpers/worker.ts';

const secret = `whsec_${randomBytes(32).toString('base64')}`;
const { redis, cleanup } = usePrivateRedis();

interface Setup {
  listener: TestListener;
  target: Receiver;
  db: TempSchema;
  /** Environment of a worker wired to this listener's queue, the schema and the target. */
  workerEnv: Record<string, string>;
}

async function setup(listenerEnv: Record<string, string> = {}, workerEnv: Record<string, string> = {}): Promise<Setup> {
  const listener = await startTestListener(redis.url, { JOB_BACKOFF_MS: '20', ...listenerEnv });
  cleanup.push(() => listener.close());
  await untilReady(listener);
  const target = await startReceiver();
  cleanup.push(() => target.close());
  const db = await tempSchema();
  cleanup.push(() => db.drop());
  return {
    listener,
    target,
    db,
    workerEnv: {
      REDIS_URL: redis.url,
      QUEUE_NAME: listener.config.queueName,
      DATABASE_URL: db.url,
      DATABASE_SCHEMA: db.schema,
      FORWARD_URL: target.url,
      FORWARD_SECRET: secret,
      ...workerEnv,
    },
  };
}

async function rows(db: TempSchema) {
  return db.query<{ delivery_id: string; related_id: string; raw_body: string }>(
    `SELECT delivery_id, related_id, raw_body FROM ${db.schema}.sellsy_events`,
  );
}

async function state(listener: TestListener, jobId: string) {
  return listener.queue.getJobState(jobId);
}

function verified(target: Receiver, index: number): Record<string, unknown> {
  const request = target.received[index];
  assert.ok(request, `the target received request ${index}`);
  const headers = Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k, String(v)]));
  return new Webhook(secret).verify(request.body, headers) as Record<string, unknown>;
}

test('a delivery reaches the forward target once, with a verifiable signature, and PostgreSQL once', async () => {
  const { listener, target, db, workerEnv } = await setup();
  const worker = await startTestWorker(listener, workerEnv);
  try {
    const body = recordBody('1001', 1);
    const res = await post(listener.url, body, json);
    const jobId = res.body.jobId as string;
    await waitFor(async () => (await state(listener, jobId)) === 'completed', 15_000, 'the job completed');
    // Posted again: the same delivery, deduplicated by the listener. A later delivery, once handled, shows that
    // nothing more for the first one was still on its way.
    assert.equal((await post(listener.url, body, json)).body.duplicate, true);
    const next = (await post(listener.url, recordBody('1001', 2), json)).body.jobId as string;
    await waitFor(async () => (await state(listener, next)) === 'completed', 15_000, 'the later delivery completed');
    assert.deepEqual(
      target.received.map((r) => r.headers['webhook-id']),
      [jobId, next],
    );
    const payload = verified(target, 0);
    assert.equal(payload.type, 'invoice.step');
    assert.equal(payload.deliveryId, jobId);
    assert.equal(payload.rawBody, body);
    assert.equal(target.received[0]?.headers['webhook-id'], jobId);
    assert.deepEqual(
      (await rows(db)).find((r) => r.delivery_id === jobId),
      {
        delivery_id: jobId,
        related_id: '1001',
        raw_body: body,
      },
    );
    assert.equal((await rows(db)).length, 2);
  } finally {
    await worker.close();
  }
});

test('a target failing twice then answering 200: one row, three attempts, one webhook-id', async () => {
  const { listener, target, db, workerEnv } = await setup({ JOB_ATTEMPTS: '5' });
  target.answer = (res, i) => answerWith(i < 2 ? 503 : 200)(res, i);
  const worker = await startTestWorker(listener, workerEnv);
  try {
    const jobId = (await post(listener.url, recordBody('1002', 1), json)).body.jobId as string;
    await waitFor(async () => (await state(listener, jobId)) === 'completed', 15_000, 'the job completed');
    assert.equal((await listener.queue.getJob(jobId))?.attemptsMade, 3);
    assert.equal(target.received.length, 3);
    assert.deepEqual(new Set(target.received.map((r) => r.headers['webhook-id'])), new Set([jobId]));
    assert.equal((await rows(db)).length, 1);
  } finally {
    await worker.close();
  }
});

test('a target that keeps failing: dead letter; `replay --dry-run` lists it; `replay` after the fix delivers it', async () => {
  const { listener, target, db, workerEnv } = await setup({ JOB_ATTEMPTS: '2' });
  target.answer = answerWith(500);
  const worker = await startTestWorker(listener, workerEnv);
  try {
    const jobId = (await post(listener.url, recordBody('1003', 1), json)).body.jobId as string;
    const other = (await post(listener.url, recordBody('1004', 1), json)).body.jobId as string;
    await waitFor(async () => (await state(listener, jobId)) === 'failed', 15_000, 'the job failed for good');
    await waitFor(async () => (await state(listener, other)) === 'failed', 15_000, 'the other job failed for good');
    assert.equal(target.received.length, 4, 'two attempts each');
    const job = await listener.queue.getJob(jobId);
    assert.match(job?.failedReason ?? '', /\[forward \*\] forward to .* answered 500/);

    const cli = { REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName };
    const dry = runCli(['replay', '--dry-run', '--id', jobId], cli);
    assert.equal(dry.status, 0, dry.stderr);
    assert.match(
      dry.stdout,
      new RegExp(`would replay ${listener.config.queueName} ${jobId} invoice.step failed .* after 2 attempts`),
    );
    assert.match(dry.stdout, /1 dead letters would be replayed/);
    assert.equal(await state(listener, jobId), 'failed', '--dry-run changed nothing');

    target.answer = answerWith(204);
    const run = runCli(['replay', '--id', jobId], cli);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /1 dead letters replayed/);
    await waitFor(async () => (await state(listener, jobId)) === 'completed', 15_000, 'the replayed job completed');
    assert.equal(await state(listener, other), 'failed', 'the job not selected stays a dead letter');
    assert.equal(verified(target, 4).deliveryId, jobId);
    assert.equal((await rows(db)).length, 2, 'one row per delivery, whatever the retries');
  } finally {
    await worker.close();
  }
});

test('a worker killed (kill -9) in the middle of a job: after a restart the job completes, still one row', async () => {
  const { listener, target, db, workerEnv } = await setup();
  // The first request never gets an answer: the worker is killed while it waits.
  target.answer = (res, i) => {
    if (i > 0) res.end();
  };
  const env = { ...workerEnv, WORKER_LOCK_MS: '2000', LOG_LEVEL: 'warn', FORWARD_TIMEOUT_MS: '60000' };
  const first = spawnCli(['work'], env);
  cleanup.push(async () => first.child.kill('SIGKILL'));
  const jobId = (await post(listener.url, recordBody('1005', 1), json)).body.jobId as string;
  await waitFor(() => target.received.length === 1, 20_000, 'the worker is in the middle of the job');
  first.child.kill('SIGKILL');
  await first.exited;
  assert.equal(await state(listener, jobId), 'active', 'the job was left locked by the dead worker');

  const second = spawnCli(['work'], env);
  cleanup.push(async () => second.child.kill('SIGKILL'));
  try {
    await waitFor(
      async () => (await state(listener, jobId)) === 'completed',
      30_000,
      'the job completed after restart',
    );
    assert.equal(target.received.length, 2);
    assert.equal(target.received[1]?.headers['webhook-id'], jobId, 'the same webhook-id: the receiver can deduplicate');
    assert.equal((await rows(db)).length, 1);
  } finally {
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0, 'a SIGTERM stops the worker cleanly');
  }
});

test('sellsy-fetch: the Sellsy API answers 429 three times; the worker slows down and succeeds with 2 attempts', async () => {
  const fake = await startFakeSellsy();
  cleanup.push(() => fake.close());
  fake.put('invoices', '1006', { id: 1006, status: 'paid', amount: '120.00' });
  const { listener, target, db, workerEnv } = await setup({ JOB_ATTEMPTS: '2' });
  const registry = new Registry();
  const worker = await startTestWorker(
    listener,
    {
      ...workerEnv,
      SELLSY_CLIENT_ID: fake.clientId,
      SELLSY_CLIENT_SECRET: fake.clientSecret,
      SELLSY_API_URL: fake.apiUrl,
      SELLSY_TOKEN_URL: fake.tokenUrl,
    },
    undefined,
    registry,
  );
  const records = new Queue(recordQueueName(listener.config.queueName), { connection: { url: redis.url } });
  cleanup.push(() => records.close());
  try {
    // The worker reads Sellsy's view of the webhooks as it starts (src/reconcile/webhook-watch.ts), with the same
    // client: let that call be done before the 429s, which are meant for sellsy-fetch.
    await waitFor(() => fake.apiRequests().some((r) => r.path.startsWith('/v2/webhooks')), 10_000, 'webhook view');
    await new Promise((r) => setTimeout(r, 100));
    fake.failNext(3, 429, { 'Retry-After': '1', 'X-Quota-Remaining-By-Second': '0' });
    const started = Date.now();
    const jobId = (await post(listener.url, recordBody('1006', 1), json)).body.jobId as string;
    await waitFor(async () => (await records.getJobState(jobId)) === 'completed', 30_000, 'the record job completed');
    assert.ok(Date.now() - started >= 2500, 'the worker waited the Retry-After of each 429');
    assert.equal((await records.getJob(jobId))?.attemptsMade, 1, 'the 429s used no attempt');
    assert.deepEqual(verified(target, 0).object, { id: 1006, status: 'paid', amount: '120.00' });
    assert.equal(target.received.length, 1);
    assert.equal((await rows(db)).length, 1);
    assert.equal(await state(listener, jobId), 'completed');
    const scrape = await registry.metrics();
    assert.match(scrape, /^sellsy_webhooks_sellsy_api_rate_limited_total 3$/m);
    // 4 by sellsy-fetch, 1 reading the webhooks: one client, one count of the quota spent.
    assert.match(scrape, /^sellsy_webhooks_sellsy_api_calls_total 5$/m);
    assert.match(scrape, /^sellsy_webhooks_jobs_total\{queue="records",outcome="rate_limited"\} 3$/m);
    assert.match(scrape, /^sellsy_webhooks_sellsy_api_quota_remaining\{window="second"\} \d+$/m);
  } finally {
    await worker.close();
  }
});

/** A worker with sellsy-fetch on the fake and RECORD_ORDER=latest, wired to a fresh setup. */
async function fetchingWorker(fake: FakeSellsy, listenerEnv: Record<string, string> = {}) {
  const s = await setup(listenerEnv);
  const worker = await startTestWorker(s.listener, {
    ...s.workerEnv,
    RECORD_ORDER: 'latest',
    SELLSY_CLIENT_ID: fake.clientId,
    SELLSY_CLIENT_SECRET: fake.clientSecret,
    SELLSY_API_URL: fake.apiUrl,
    SELLSY_TOKEN_URL: fake.tokenUrl,
  });
  const records = new Queue(recordQueueName(s.listener.config.queueName), { connection: { url: redis.url } });
  cleanup.push(() => records.close());
  return { ...s, worker, records };
}

test('regression: a byte-identical delivery after its record ran (a second change within the same second) fetches and forwards the new state under its own webhook-id', async () => {
  const fake = await startFakeSellsy();
  cleanup.push(() => fake.close());
  const { listener, target, db, worker, records } = await fetchingWorker(fake);
  try {
    fake.put('invoices', '1010', { id: 1010, step: 'draft' });
    const body = recordBody('1010', 1);
    const first = (await post(listener.url, body, json)).body;
    await waitFor(async () => (await records.getJobState(first.jobId as string)) === 'completed', 15_000, 'record ran');
    assert.deepEqual(verified(target, 0).object, { id: 1010, step: 'draft' });

    fake.put('invoices', '1010', { id: 1010, step: 'sent' });
    const second = (await post(listener.url, body, json)).body;
    assert.equal(second.duplicate, true, 'the delivery queue still folds it');
    assert.equal(second.jobId, first.jobId);
    await waitFor(async () => target.received.length >= 2, 15_000, 'the record ran again and forwarded');
    const payload = verified(target, 1);
    assert.deepEqual(payload.object, { id: 1010, step: 'sent' });
    assert.equal(target.received[1]?.headers['webhook-id'], second.deliveryId);
    assert.notEqual(second.deliveryId, first.deliveryId);
    assert.equal((await rows(db)).length, 1, 'the folded delivery adds no row');
    assert.equal(await listener.queue.getJob(second.deliveryId as string), undefined, 'nor an ingest job');
  } finally {
    await worker.close();
  }
});

test("regression: with two Sellsy accounts, each record is fetched with its own account's client, and an account without credentials is a dead letter", async () => {
  const fake = await startFakeSellsy();
  cleanup.push(() => fake.close());
  fake.put('invoices', '42', { id: 42, account: '929' });
  fake.addAccount('client-138', 'secret-138').put('invoices', '42', { id: 42, account: '138' });
  const { listener, target, workerEnv } = await setup();
  const worker = await startTestWorker(listener, {
    ...workerEnv,
    RECORD_ORDER: 'latest',
    SELLSY_CLIENT_ID: fake.clientId,
    SELLSY_CLIENT_SECRET: fake.clientSecret,
    SELLSY_ACCOUNT_ID: '929',
    SELLSY_ACCOUNT_CREDENTIALS: JSON.stringify({ 138: { clientId: 'client-138', clientSecret: 'secret-138' } }),
    SELLSY_API_URL: fake.apiUrl,
    SELLSY_TOKEN_URL: fake.tokenUrl,
  });
  const records = new Queue(recordQueueName(listener.config.queueName), { connection: { url: redis.url } });
  cleanup.push(() => records.close());
  try {
    const ids: string[] = [];
    for (const account of ['138', '929', '777']) {
      ids.push((await post(listener.url, recordBody('42', 1, account), json)).body.jobId as string);
    }
    const ended = async (id: string) => ['completed', 'failed'].includes((await records.getJobState(id)) ?? '');
    await waitFor(async () => (await Promise.all(ids.map(ended))).every(Boolean), 20_000, 'the record jobs ended');
    const forwarded = target.received.map((_, i) => verified(target, i));
    assert.deepEqual(Object.fromEntries(forwarded.map((p) => [p.account, p.object])), {
      138: { id: 42, account: '138' },
      929: { id: 42, account: '929' },
    });
    const unknown = await records.getJob(ids[2] as string);
    assert.equal(await unknown?.getState(), 'failed');
    assert.match(unknown?.failedReason ?? '', /no Sellsy API credentials for account "777"/);
  } finally {
    await worker.close();
  }
});

test('RECORD_ORDER=off: an object Sellsy cannot return fails the job, and the delivery is stored all the same', async () => {
  const fake = await startFakeSellsy();
  cleanup.push(() => fake.close());
  const { listener, target, db, workerEnv } = await setup();
  const worker = await startTestWorker(listener, {
    ...workerEnv,
    RECORD_ORDER: 'off',
    SELLSY_CLIENT_ID: fake.clientId,
    SELLSY_CLIENT_SECRET: fake.clientSecret,
    SELLSY_API_URL: fake.apiUrl,
    SELLSY_TOKEN_URL: fake.tokenUrl,
  });
  try {
    // No invoice 1007 in the fake: the look-up answers 404, a permanent failure.
    const jobId = (await post(listener.url, recordBody('1007', 1), json)).body.jobId as string;
    await waitFor(async () => (await state(listener, jobId)) === 'failed', 20_000, 'the job became a dead letter');
    assert.match((await listener.queue.getJob(jobId))?.failedReason ?? '', /^\[sellsy-fetch \*\] .*answered 404/);
    assert.deepEqual(
      (await rows(db)).map((r) => r.related_id),
      ['1007'],
      'postgres ran before sellsy-fetch',
    );
    assert.equal(target.received.length, 0, 'forward, after sellsy-fetch, did not run');
  } finally {
    await worker.close();
  }
});

test('regression: a NUL in the account and a lone surrogate in the event are stored, and the forward after postgres runs', async () => {
  const { listener, target, db, workerEnv } = await setup();
  const worker = await startTestWorker(listener, { ...workerEnv, RECORD_ORDER: 'off' });
  try {
    const body =
      '{"event":"step","relatedtype":"invoice","relatedid":"10\\u000008","corpid":"92\\u00009","note":"\\ud800"}';
    const jobId = (await post(listener.url, body, json)).body.jobId as string;
    await waitFor(
      async () => ['completed', 'failed'].includes((await state(listener, jobId)) ?? ''),
      15_000,
      'the job ended',
    );
    assert.equal((await listener.queue.getJob(jobId))?.failedReason ?? '', '');
    assert.equal(await state(listener, jobId), 'completed');
    assert.deepEqual(await rows(db), [{ delivery_id: jobId, related_id: '10\uFFFD08', raw_body: body }]);
    assert.equal(verified(target, 0).account, '92\u00009', 'forward sends the account as received');
  } finally {
    await worker.close();
  }
});

test('no log line of the listener or the worker holds a key, a signature, a secret or a token', async () => {
  const fake = await startFakeSellsy({ clientSecret: 'sellsy-client-secret-value-123' });
  cleanup.push(() => fake.close());
  fake.put('invoices', '1007', { id: 1007 });
  const key = 'listener-signing-key-value-456';
  const { listener, target, workerEnv } = await setup({ SELLSY_SIGN_KEY: key, JOB_ATTEMPTS: '2' });
  target.answer = (res, i) => answerWith(i === 0 ? 500 : 200)(res, i);
  const worker = await startTestWorker(listener, {
    ...workerEnv,
    SELLSY_SIGN_KEY: key,
    SELLSY_CLIENT_ID: fake.clientId,
    SELLSY_CLIENT_SECRET: fake.clientSecret,
    SELLSY_API_URL: fake.apiUrl,
    SELLSY_TOKEN_URL: fake.tokenUrl,
    RECORD_ORDER: 'off',
  });
  try {
    fake.failNext(1, 429, { 'Retry-After': '0.1' });
    const body = recordBody('1007', 1);
    const signature = (await import('../../src/sellsy/signature.ts')).sign(key, body);
    const good = await post(listener.url, body, { ...json, 'x-webhook-signature': signature });
    assert.equal(good.status, 200);
    assert.equal(
      (await post(listener.url, recordBody('1008', 1), { ...json, 'x-webhook-signature': 'f'.repeat(40) })).status,
      401,
    );
    await waitFor(async () => (await state(listener, good.body.jobId as string)) === 'completed', 20_000, 'completed');
    const lines = [...listener.logs, ...worker.logs].map((l) => JSON.stringify(l));
    assert.ok(
      lines.some((l) => l.includes('"outcome":"retry"')),
      'the failure paths were logged',
    );
    assert.ok(
      lines.some((l) => l.includes('slowing down')),
      'the 429 path was logged',
    );
    const secrets = [key, signature, secret, secret.slice('whsec_'.length), fake.clientSecret, 'tok-1', 'tok-2'];
    for (const line of lines)
      for (const s of secrets) assert.ok(!line.includes(s), `a log line holds a secret: ${line}`);
  } finally {
    await worker.close();
  }
});
