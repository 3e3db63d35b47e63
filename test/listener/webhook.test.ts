import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Worker } from 'bullmq';
import type { WebhookJobData } from '../../src/queue/contract.ts';
import { rawBytesOf } from '../../src/queue/contract.ts';
import { sign } from '../../src/sellsy/signature.ts';
import { post, startTestListener, type TestListener, useTestListeners } from '../helpers/listener.ts';
import { freePort } from '../helpers/redis-server.ts';
import { KEY, VECTORS } from '../helpers/vectors.ts';
import { waitFor } from '../helpers/wait.ts';

const JSON_TYPE = { 'content-type': 'application/json' };
const FORM_TYPE = { 'content-type': 'application/x-www-form-urlencoded' };

const { listener, redis } = useTestListeners();
/** Listeners on a Redis that does not answer, started by the tests themselves. */
const others: TestListener[] = [];
after(async () => {
  for (const l of others) await l.close();
});

async function jobs(l: TestListener) {
  return l.queue.getJobs(['waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized']);
}

describe('with SELLSY_SIGN_KEY set', () => {
  let l: TestListener;
  before(async () => {
    l = await listener({ SELLSY_SIGN_KEY: KEY });
  });

  test('a signed JSON delivery becomes one job with the exact bytes and the parsed fields', async () => {
    const res = await post(l.url, VECTORS.json.body, { ...JSON_TYPE, 'x-webhook-signature': VECTORS.json.signature });
    assert.equal(res.status, 200);
    assert.equal(res.body.ok, true);
    assert.equal(res.body.duplicate, false);
    const job = await l.queue.getJob(res.body.jobId as string);
    assert.ok(job);
    assert.equal(job.name, 'estimate.step');
    const data = job.data as WebhookJobData;
    assert.equal(data.rawBody, VECTORS.json.body.toString('utf8'));
    assert.equal(data.rawBodyBase64, undefined);
    assert.equal(data.contentType, 'application/json');
    assert.equal(data.account, '929');
    assert.deepEqual(data.signature, { status: 'verified', header: VECTORS.json.signature, scope: 'body' });
    assert.equal(data.event?.relatedId, '52437688');
    assert.equal(data.event?.timestamp, '1778187955');
    assert.equal(data.parseProblem, null);
    assert.ok(Math.abs(Date.parse(data.receivedAt) - Date.now()) < 10_000);
    assert.equal(job.opts.attempts, 8);
  });

  test('a JSON delivery with PHP escapes keeps its bytes (\\/ and \\u00e9) byte for byte', async () => {
    const res = await post(l.url, VECTORS.jsonWithObject.body, {
      ...JSON_TYPE,
      'x-webhook-signature': VECTORS.jsonWithObject.signature,
    });
    assert.equal(res.status, 200);
    const job = await l.queue.getJob(res.body.jobId as string);
    assert.ok(job);
    assert.equal(job.name, 'invoice.step');
    assert.ok(rawBytesOf(job.data).equals(VECTORS.jsonWithObject.body));
    assert.deepEqual((job.data as WebhookJobData).event?.relatedObject, {
      id: 987654,
      number: 'FAC-2026-0042',
      status: 'paid',
      subject: 'Prestation décembre',
      pdf_link: 'https://example.invalid/x.pdf',
    });
  });

  test('a signed form delivery becomes one job named after relatedtype and event', async () => {
    const res = await post(l.url, VECTORS.form.body, { ...FORM_TYPE, 'x-webhook-signature': VECTORS.form.signature });
    assert.equal(res.status, 200);
    const job = await l.queue.getJob(res.body.jobId as string);
    assert.ok(job);
    assert.equal(job.name, 'third.updated');
    assert.ok(rawBytesOf(job.data).equals(VECTORS.form.body));
    assert.equal(job.data.account, '138');
    assert.deepEqual(job.data.event.extra, { thirdtype: 'client', individual: false });
  });

  test('a missing, wrong or HMAC signature is answered 401 and queues nothing', async () => {
    const before = (await jobs(l)).length;
    const body = Buffer.from(VECTORS.json.body.toString().replace('52437688', '52437689'));
    const missing = await post(l.url, body, JSON_TYPE);
    assert.equal(missing.status, 401);
    assert.deepEqual([missing.body.ok, missing.body.error], [false, 'missing_signature']);
    const wrong = await post(l.url, body, { ...JSON_TYPE, 'x-webhook-signature': VECTORS.json.signature });
    assert.deepEqual([wrong.status, wrong.body.error], [401, 'bad_signature']);
    const hmac = await post(l.url, VECTORS.json.body, {
      ...JSON_TYPE,
      'x-webhook-signature': '2e6627af8acad38b54e07fe9dd3f8a2a4c9518d9',
    });
    assert.deepEqual([hmac.status, hmac.body.error], [401, 'bad_signature']);
    const odd = await post(l.url, 'garbage', { 'content-type': 'text/plain' });
    assert.equal(odd.status, 401);
    assert.equal((await jobs(l)).length, before);
    const counter = await l.metrics.deliveries.get();
    assert.equal(counter.values.find((v) => v.labels.outcome === 'bad_signature')?.value, 4);
  });

  test('the same delivery received twice makes one job and is counted as a duplicate', async () => {
    const body = Buffer.from(VECTORS.json.body.toString().replace('52437688', '11111111'));
    const headers = { ...JSON_TYPE, 'x-webhook-signature': sign(KEY, body) };
    const first = await post(l.url, body, headers);
    const second = await post(l.url, body, headers);
    assert.equal(first.status, 200);
    assert.equal(second.status, 200);
    assert.equal(second.body.duplicate, true);
    assert.equal(second.body.jobId, first.body.jobId);
    const matching = (await jobs(l)).filter((j) => j.data.rawBody === body.toString());
    assert.equal(matching.length, 1);
    const counter = await l.metrics.deliveries.get();
    assert.equal(counter.values.find((v) => v.labels.outcome === 'duplicate')?.value, 1);
  });
});

test('form signatures can be checked against the decoded notif value (SIGNATURE_FORM_SCOPE=notif)', async () => {
  const l = await listener({ SELLSY_SIGN_KEY: KEY, SIGNATURE_FORM_SCOPE: 'notif' });
  const ok = await post(l.url, VECTORS.form.body, { ...FORM_TYPE, 'x-webhook-signature': VECTORS.form.notifSignature });
  assert.equal(ok.status, 200);
  const job = await l.queue.getJob(ok.body.jobId as string);
  assert.equal(job?.data.signature.scope, 'notif');
  const raw = await post(l.url, VECTORS.form.body, { ...FORM_TYPE, 'x-webhook-signature': VECTORS.form.signature });
  assert.equal(raw.status, 401);
  // The same signed notif with an extra form field is the same delivery.
  const padded = Buffer.concat([VECTORS.form.body, Buffer.from('&x=1')]);
  const again = await post(l.url, padded, { ...FORM_TYPE, 'x-webhook-signature': VECTORS.form.notifSignature });
  assert.deepEqual([again.status, again.body.duplicate, again.body.jobId], [200, true, ok.body.jobId]);
  // JSON bodies are still verified over the raw body, and recorded so.
  const json = await post(l.url, VECTORS.json.body, { ...JSON_TYPE, 'x-webhook-signature': VECTORS.json.signature });
  assert.equal(json.status, 200);
  assert.equal((await l.queue.getJob(json.body.jobId as string))?.data.signature.scope, 'body');
});

test('during a key rotation a delivery signed with either configured key is accepted', async () => {
  const l = await listener({ SELLSY_SIGN_KEY: `NewKey, ${KEY}` });
  const old = await post(l.url, VECTORS.json.body, { ...JSON_TYPE, 'x-webhook-signature': VECTORS.json.signature });
  assert.equal(old.status, 200);
  const body = Buffer.from('{"relatedtype":"invoice","event":"created","corpid":"929","relatedid":"5"}');
  const fresh = await post(l.url, body, { ...JSON_TYPE, 'x-webhook-signature': sign('NewKey', body) });
  assert.equal(fresh.status, 200);
  const other = await post(l.url, body, { ...JSON_TYPE, 'x-webhook-signature': sign('ThirdKey', body) });
  assert.equal(other.status, 401);
});

test('per-account keys are chosen by corpid, or by the path segment when the payload has none', async () => {
  const l = await listener({ SELLSY_ACCOUNT_KEYS: JSON.stringify({ '929': KEY, '138': ['NewKey138', 'OldKey138'] }) });
  // corpid 929 in the body selects MyWebhookKey, with or without the path segment.
  const byCorp = await post(l.url, VECTORS.json.body, { ...JSON_TYPE, 'x-webhook-signature': VECTORS.json.signature });
  assert.equal(byCorp.status, 200);
  const body = Buffer.from(VECTORS.json.body.toString().replace('52437688', '777'));
  const byBoth = await post(
    l.url,
    body,
    { ...JSON_TYPE, 'x-webhook-signature': sign(KEY, body) },
    '/webhook/sellsy/929',
  );
  assert.equal(byBoth.status, 200);
  assert.equal((await l.queue.getJob(byBoth.body.jobId as string))?.data.account, '929');
  // A body without corpid: the path segment names the account (here, its older key during a rotation).
  const unparsed = Buffer.from('hello');
  const byPath = await post(
    l.url,
    unparsed,
    { 'content-type': 'text/plain', 'x-webhook-signature': sign('OldKey138', unparsed) },
    '/webhook/sellsy/138',
  );
  assert.equal(byPath.status, 200);
  assert.equal((await l.queue.getJob(byPath.body.jobId as string))?.data.account, '138');
  // An account with no key of its own and no SELLSY_SIGN_KEY fallback is refused.
  const unknown = await post(
    l.url,
    unparsed,
    { 'content-type': 'text/plain', 'x-webhook-signature': sign(KEY, unparsed) },
    '/webhook/sellsy/nobody',
  );
  assert.deepEqual([unknown.status, unknown.body.error], [401, 'unknown_account']);
});

test('regression: a key cannot vouch for another account (path segment and corpid must agree)', async () => {
  const l = await listener({
    SELLSY_SIGN_KEY: 'GlobalKey',
    SELLSY_ACCOUNT_KEYS: JSON.stringify({ '929': KEY, '138': 'Key138' }),
  });
  // Account 138 signs a payload claiming corpid 929, posted to its own URL: refused, nothing queued.
  const forged = await post(
    l.url,
    VECTORS.json.body,
    { ...JSON_TYPE, 'x-webhook-signature': sign('Key138', VECTORS.json.body) },
    '/webhook/sellsy/138',
  );
  assert.deepEqual([forged.status, forged.body.error], [401, 'account_mismatch']);
  // The global key cannot sign for an account that has keys of its own, whatever the URL.
  const viaOther = await post(
    l.url,
    VECTORS.json.body,
    { ...JSON_TYPE, 'x-webhook-signature': sign('GlobalKey', VECTORS.json.body) },
    '/webhook/sellsy/x',
  );
  assert.equal(viaOther.status, 401);
  const direct = await post(l.url, VECTORS.json.body, {
    ...JSON_TYPE,
    'x-webhook-signature': sign('GlobalKey', VECTORS.json.body),
  });
  assert.deepEqual([direct.status, direct.body.error], [401, 'bad_signature']);
  assert.equal((await jobs(l)).length, 0);
});

test('regression: a trailing slash (/webhook/sellsy/) is the plain webhook URL', async () => {
  const l = await listener({ SELLSY_ACCOUNT_KEYS: JSON.stringify({ '929': KEY }) });
  const res = await post(
    l.url,
    VECTORS.json.body,
    { ...JSON_TYPE, 'x-webhook-signature': VECTORS.json.signature },
    '/webhook/sellsy/',
  );
  assert.equal(res.status, 200);
  assert.equal((await l.queue.getJob(res.body.jobId as string))?.data.account, '929');
});

test('SIGNATURE_CHECK=worker queues the delivery unchecked, with the header and the raw body', async () => {
  const l = await listener({ SELLSY_SIGN_KEY: KEY, SIGNATURE_CHECK: 'worker' });
  const res = await post(l.url, VECTORS.json.body, { ...JSON_TYPE, 'x-webhook-signature': 'deadbeef' });
  assert.equal(res.status, 200);
  const job = await l.queue.getJob(res.body.jobId as string);
  assert.deepEqual(job?.data.signature, { status: 'unchecked', header: 'deadbeef', scope: 'body' });
  assert.equal(job?.data.rawBody, VECTORS.json.body.toString());
});

describe('with no key configured', () => {
  let l: TestListener;
  before(async () => {
    l = await listener({ BODY_LIMIT_BYTES: '2048' });
  });

  test('the original design example works unchanged and becomes an invoice.paid job', async () => {
    const body = '{"event":"invoice.paid","data":{"id":123,"customer":"Acme Corp"}}';
    const res = await post(l.url, body, JSON_TYPE);
    assert.equal(res.status, 200);
    const job = await l.queue.getJob(res.body.jobId as string);
    assert.equal(job?.name, 'invoice.paid');
    assert.equal(job?.data.rawBody, body);
    assert.equal(job?.data.signature.status, 'not_configured');
  });

  const odd: [string, Buffer | string, Record<string, string>, string][] = [
    ['invalid JSON', '{"event": "step", ', JSON_TYPE, 'invalid_json'],
    ['an empty JSON body', '', JSON_TYPE, 'invalid_json'],
    ['a form without notif', 'foo=bar&baz=1', FORM_TYPE, 'form_without_notif'],
    ['a form whose notif is not JSON', 'notif=hello', FORM_TYPE, 'invalid_json'],
    ['a JSON array', '[{"event":"step"}]', JSON_TYPE, 'not_an_object'],
    ['another content type', '<xml>hello</xml>', { 'content-type': 'application/xml' }, 'unsupported_content_type'],
    ['no content type at all', Buffer.from('hello'), {}, 'unsupported_content_type'],
    [
      'a Content-Type that is not a media type',
      '{"event":"step"}',
      { 'content-type': 'json' },
      'unsupported_content_type',
    ],
    ['a Content-Type without a subtype', 'hello, text', { 'content-type': 'text' }, 'unsupported_content_type'],
  ];
  for (const [what, body, headers, problem] of odd) {
    test(`${what} is kept as an unknown job with the problem recorded`, async () => {
      const res = await post(l.url, body, headers);
      assert.equal(res.status, 200);
      const job = await l.queue.getJob(res.body.jobId as string);
      assert.ok(job, 'a job exists');
      assert.equal(job.name, 'unknown');
      assert.equal(job.data.parseProblem, problem);
      assert.equal(job.data.rawBody, body.toString());
      assert.equal(job.data.contentType, headers['content-type'] ?? null);
      assert.equal(job.data.event, null);
    });
  }

  test('a body that is not valid UTF-8 is kept byte-exact in rawBodyBase64', async () => {
    const body = Buffer.from([0x7b, 0xff, 0xfe, 0x00, 0x80, 0x7d]);
    const res = await post(l.url, body, { 'content-type': 'application/octet-stream' });
    assert.equal(res.status, 200);
    const job = await l.queue.getJob(res.body.jobId as string);
    assert.ok(job);
    assert.ok(rawBytesOf(job.data).equals(body));
  });

  test('an empty object is accepted as an unknown job with its event parsed', async () => {
    const res = await post(l.url, '{}', JSON_TYPE);
    const job = await l.queue.getJob(res.body.jobId as string);
    assert.equal(job?.name, 'unknown');
    assert.equal(job?.data.parseProblem, null);
    assert.equal(job?.data.event.relatedType, null);
  });

  test('a body over BODY_LIMIT_BYTES is answered 413 and queues nothing', async () => {
    const before = (await jobs(l)).length;
    const res = await post(l.url, `{"pad":"${'x'.repeat(3000)}"}`, JSON_TYPE);
    assert.equal(res.status, 413);
    assert.deepEqual([res.body.ok, res.body.error], [false, 'payload_too_large']);
    assert.equal((await jobs(l)).length, before);
  });

  test('GET and HEAD on the webhook path answer 200 and queue nothing', async () => {
    const before = (await jobs(l)).length;
    const get = await fetch(`${l.url}/webhook/sellsy`);
    assert.equal(get.status, 200);
    assert.deepEqual(await get.json(), { ok: true });
    const head = await fetch(`${l.url}/webhook/sellsy`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    const getAccount = await fetch(`${l.url}/webhook/sellsy/acme`);
    assert.equal(getAccount.status, 200);
    assert.equal((await jobs(l)).length, before);
  });

  test('the same body from two accounts is two deliveries', async () => {
    const body = '{"relatedtype":"item","event":"updated","relatedid":"9"}';
    const a = await post(l.url, body, JSON_TYPE, '/webhook/sellsy/a');
    const b = await post(l.url, body, JSON_TYPE, '/webhook/sellsy/b');
    assert.equal(a.body.duplicate, false);
    assert.equal(b.body.duplicate, false);
    assert.notEqual(a.body.jobId, b.body.jobId);
  });

  test('deduplication outlives the completion and automatic removal of the first job', async () => {
    const lr = await listener({ JOB_KEEP_COMPLETED_SECONDS: '0' });
    const body = '{"relatedtype":"order","event":"created","relatedid":"77","corpid":"1"}';
    const first = await post(lr.url, body, JSON_TYPE);
    const worker = new Worker(lr.config.queueName, async () => undefined, {
      connection: { url: redis().url, maxRetriesPerRequest: null },
      prefix: lr.config.queuePrefix,
    });
    try {
      const removed = async () => (await lr.queue.getJob(first.body.jobId as string)) === undefined;
      await waitFor(removed, 10_000, 'the job to be completed and removed');
    } finally {
      await worker.close();
    }
    const again = await post(lr.url, body, JSON_TYPE);
    assert.equal(again.body.duplicate, true);
    assert.equal(again.body.jobId, first.body.jobId);
    assert.equal(await lr.queue.getJob(first.body.jobId as string), undefined, 'no job was re-created');
  });

  test('concurrent deliveries written together each get their own job, and a duplicate among them is folded', async () => {
    const bodies = Array.from(
      { length: 30 },
      (_, i) => `{"relatedtype":"client","event":"updated","relatedid":"c${i}"}`,
    );
    bodies.push(bodies[0] as string);
    const results = await Promise.all(bodies.map((body) => post(l.url, body, JSON_TYPE)));
    for (const r of results) assert.equal(r.status, 200);
    const duplicates = results.filter((r) => r.body.duplicate === true);
    assert.equal(duplicates.length, 1);
    const jobIds = new Set(results.map((r) => r.body.jobId));
    assert.equal(jobIds.size, 30);
    for (let i = 0; i < 30; i++) {
      const job = await l.queue.getJob(results[i]?.body.jobId as string);
      assert.equal(job?.data.rawBody, bodies[i]);
    }
  });

  test('DEDUP_WINDOW_SECONDS=0 turns deduplication off', async () => {
    const l0 = await listener({ DEDUP_WINDOW_SECONDS: '0' });
    const body = '{"relatedtype":"order","event":"created","relatedid":"78"}';
    const first = await post(l0.url, body, JSON_TYPE);
    const second = await post(l0.url, body, JSON_TYPE);
    assert.equal(second.body.duplicate, false);
    assert.notEqual(first.body.jobId, second.body.jobId);
  });

  test('each queued delivery is logged once with its keys', async () => {
    const body = '{"relatedtype":"task","event":"deleted","relatedid":"31","corpid":"5"}';
    const res = await post(l.url, body, JSON_TYPE);
    const lines = l.logs.filter((line) => line.deliveryId === res.body.deliveryId);
    assert.equal(lines.length, 1);
    const [line] = lines;
    assert.equal(line?.msg, 'delivery');
    assert.equal(line?.event, 'task.deleted');
    assert.equal(line?.relatedId, '31');
    assert.equal(line?.account, '5');
    assert.equal(line?.jobId, res.body.jobId);
    assert.equal(line?.outcome, 'accepted');
    assert.equal(typeof line?.ackMs, 'number');
  });
});

test('healthz, readyz and metrics answer', async () => {
  const l = await listener();
  assert.equal((await fetch(`${l.url}/healthz`)).status, 200);
  const ready = await fetch(`${l.url}/readyz`);
  assert.equal(ready.status, 200);
  const body = (await ready.json()) as { ok: boolean; redis: { status: string; ping: boolean } };
  assert.equal(body.ok, true);
  assert.equal(body.redis.status, 'ready');
  assert.equal(body.redis.ping, true);
  await post(l.url, '{"relatedtype":"x","event":"y"}', JSON_TYPE);
  const metrics = await (await fetch(`${l.url}/metrics`)).text();
  assert.match(metrics, /^sellsy_webhooks_deliveries_total\{outcome="accepted"\} 1$/m);
  assert.match(metrics, /^sellsy_webhooks_redis_up 1$/m);
  assert.match(metrics, /^sellsy_webhooks_ack_seconds_count 1$/m);
});

test('readyz answers states and figures, not the Redis error text with its address nor the spool path; the log has them once', async () => {
  const port = await freePort();
  const l = await startTestListener(`redis://127.0.0.1:${port}`);
  others.push(l);
  await waitFor(() => l.queueProducer.health().lastError !== null, 5000, 'the producer to report an error', 20);
  const bodies: string[] = [];
  for (let i = 0; i < 5; i++) {
    const ready = await fetch(`${l.url}/readyz`);
    assert.equal(ready.status, 200, 'ready through the spool');
    bodies.push(await ready.text());
    await new Promise((r) => setTimeout(r, 50));
  }
  for (const body of bodies) {
    assert.ok(!body.includes(String(port)), `no Redis address in ${body}`);
    assert.ok(!body.includes(l.config.spool.dir), `no spool path in ${body}`);
    assert.ok(!body.includes('lastError'), body);
  }
  const answer = JSON.parse(bodies[0] ?? '{}') as {
    ok: boolean;
    redis: { ready: boolean; ping: boolean; status: string };
    spool: { healthy: boolean; depth: number };
  };
  assert.equal(answer.ok, true);
  assert.deepEqual([answer.redis.ready, answer.redis.ping], [false, false]);
  assert.equal(typeof answer.redis.status, 'string');
  assert.deepEqual([answer.spool.healthy, answer.spool.depth], [true, 0]);
  const lines = l.logs.filter((line) => String(line.msg).startsWith('readiness:'));
  assert.equal(lines.length, 1, 'one line for five probes of the same state');
  assert.equal(lines[0]?.msg, 'readiness: ready, with errors');
  assert.match(
    String((lines[0]?.redis as { lastError?: string } | undefined)?.lastError),
    new RegExp(`127\\.0\\.0\\.1:${port}`),
  );
});

test('no log line ever contains a configured signing key, even when the whole delivery is logged', async () => {
  const secret = 'sk-very-secret-sign-key-42';
  const accountSecret = 'acct-secret-key-99';
  const down = await startTestListener(`redis://127.0.0.1:${await freePort()}`, {
    SPOOL_MAX_BYTES: '0',
    SELLSY_SIGN_KEY: secret,
    SELLSY_ACCOUNT_KEYS: JSON.stringify({ '929': accountSecret }),
  });
  others.push(down);
  const body = '{"relatedtype":"invoice","event":"step","relatedid":"1","corpid":"1"}';
  // Queued attempt with Redis down: the whole job is logged at error level.
  const lost = await post(down.url, body, { ...JSON_TYPE, 'x-webhook-signature': sign(secret, body) });
  assert.equal(lost.body.queued, false);
  // Refusals: wrong signature, and an account-key delivery.
  await post(down.url, body, { ...JSON_TYPE, 'x-webhook-signature': sign('wrong', body) });
  await post(down.url, VECTORS.json.body, {
    ...JSON_TYPE,
    'x-webhook-signature': sign(accountSecret, VECTORS.json.body),
  });
  const text = down.logs.map((line) => JSON.stringify(line)).join('\n');
  assert.ok(down.logs.some((line) => line.msg === 'delivery not queued'));
  assert.ok(!text.includes(secret), 'the sign key is not logged');
  assert.ok(!text.includes(accountSecret), 'the account key is not logged');
  assert.ok(!text.includes(sign(secret, body)), 'the signature header is redacted');
});
