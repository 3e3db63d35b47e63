/**
 * Account identity with per-account keys (only canonical spellings select an account's keys), and what the log keeps
 * of the values an unauthenticated request claims.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LOGGED_VALUE_MAX } from '../../src/logger.ts';
import { sign } from '../../src/sellsy/signature.ts';
import { post, useTestListeners } from '../helpers/listener.ts';
import { KEY } from '../helpers/vectors.ts';

const JSON_TYPE = { 'content-type': 'application/json' };
const GLOBAL = 'GlobalKey';

const { listener } = useTestListeners();

const withAccountKeys = { SELLSY_SIGN_KEY: GLOBAL, SELLSY_ACCOUNT_KEYS: JSON.stringify({ '929': KEY }) };

function body(corpId: unknown): Buffer {
  return Buffer.from(JSON.stringify({ relatedtype: 'invoice', event: 'step', relatedid: '1', corpid: corpId }));
}

test('regression: with per-account keys, a corpid spelled "0929" or "929 " is refused bad_account, not verified with SELLSY_SIGN_KEY', async () => {
  const l = await listener(withAccountKeys);
  for (const corpId of ['0929', '929 ', ' 929', '+929', '9.29e2', '0', '929\n', '٩٢٩']) {
    const b = body(corpId);
    const res = await post(l.url, b, { ...JSON_TYPE, 'x-webhook-signature': sign(GLOBAL, b) });
    assert.deepEqual([res.status, res.body.error], [401, 'bad_account'], JSON.stringify(corpId));
  }
  // The canonical spelling is account 929, verified with its own key only; another account uses the global key.
  const own = body('929');
  assert.equal((await post(l.url, own, { ...JSON_TYPE, 'x-webhook-signature': sign(KEY, own) })).status, 200);
  assert.equal((await post(l.url, own, { ...JSON_TYPE, 'x-webhook-signature': sign(GLOBAL, own) })).status, 401);
  const other = body('138');
  assert.equal((await post(l.url, other, { ...JSON_TYPE, 'x-webhook-signature': sign(GLOBAL, other) })).status, 200);
  // A number in the JSON is the same account as its decimal string.
  const numeric = body(929);
  assert.equal((await post(l.url, numeric, { ...JSON_TYPE, 'x-webhook-signature': sign(KEY, numeric) })).status, 200);
});

test('regression: with per-account keys, a path account outside [A-Za-z0-9_-]{1,64} is refused bad_account', async () => {
  const l = await listener(withAccountKeys);
  const b = Buffer.from('no corpid here');
  const headers = { 'content-type': 'text/plain', 'x-webhook-signature': sign(GLOBAL, b) };
  for (const account of ['929%20', 'acme.corp', '%C3%A9t%C3%A9', 'a'.repeat(65)]) {
    const res = await post(l.url, b, headers, `/webhook/sellsy/${account}`);
    assert.deepEqual([res.status, res.body.error], [401, 'bad_account'], account);
  }
  const fine = await post(l.url, b, headers, `/webhook/sellsy/acme_corp-2`);
  assert.equal(fine.status, 200);
  assert.equal((await l.queue.getJob(fine.body.jobId as string))?.data.account, 'acme_corp-2');
});

test('without per-account keys, the account is not checked for its spelling (it selects no key)', async () => {
  const l = await listener({ SELLSY_SIGN_KEY: GLOBAL });
  const b = body('0929');
  const res = await post(l.url, b, { ...JSON_TYPE, 'x-webhook-signature': sign(GLOBAL, b) });
  assert.equal(res.status, 200);
  assert.equal((await l.queue.getJob(res.body.jobId as string))?.data.account, '0929');
});

test('SIGNATURE_CHECK=worker with per-account keys: a bad account is refused by the listener, before queueing', async () => {
  const l = await listener({ ...withAccountKeys, SIGNATURE_CHECK: 'worker' });
  const res = await post(l.url, body('0929'), { ...JSON_TYPE, 'x-webhook-signature': 'deadbeef' });
  assert.deepEqual([res.status, res.body.error], [401, 'bad_account']);
});

const HUGE = '9'.repeat(1024 * 1024);
const longest = (lines: Record<string, unknown>[]) => Math.max(...lines.map((line) => JSON.stringify(line).length));

test('regression: a 1 MiB corpid is logged clipped when the delivery is queued', async () => {
  const l = await listener({ BODY_LIMIT_BYTES: String(4 * 1024 * 1024) });
  const res = await post(l.url, body(HUGE), JSON_TYPE);
  assert.equal(res.status, 200);
  const line = l.logs.find((entry) => entry.deliveryId === res.body.deliveryId);
  assert.equal(line?.msg, 'delivery');
  assert.ok(String(line?.account).startsWith('9'.repeat(LOGGED_VALUE_MAX)));
  assert.match(String(line?.account), /\(1048576 characters\)$/);
  assert.ok(longest(l.logs) < 2000, `longest log line: ${longest(l.logs)} characters`);
  // The job keeps the value whole.
  assert.equal((await l.queue.getJob(res.body.jobId as string))?.data.account, HUGE);
});

test('regression: a 1 MiB corpid and a long URL are logged clipped when the delivery is refused', async () => {
  const l = await listener({ SELLSY_SIGN_KEY: GLOBAL, BODY_LIMIT_BYTES: String(4 * 1024 * 1024) });
  const wrong = await post(l.url, body(HUGE), { ...JSON_TYPE, 'x-webhook-signature': sign('nope', 'x') });
  assert.deepEqual([wrong.status, wrong.body.error], [401, 'bad_signature']);
  const longUrl = await post(l.url, body('1'), JSON_TYPE, `/webhook/sellsy?${'q'.repeat(8000)}`);
  assert.deepEqual([longUrl.status, longUrl.body.error], [401, 'missing_signature']);
  const refusals = l.logs.filter((line) => line.msg === 'delivery refused');
  assert.equal(refusals.length, 2);
  assert.ok(longest(l.logs) < 2000, `longest log line: ${longest(l.logs)} characters`);
  const keys = await listener({ ...withAccountKeys, BODY_LIMIT_BYTES: String(4 * 1024 * 1024) });
  const bad = await post(keys.url, body(`0${HUGE}`), { ...JSON_TYPE, 'x-webhook-signature': sign(KEY, 'x') });
  assert.deepEqual([bad.status, bad.body.error], [401, 'bad_account']);
  assert.ok(longest(keys.logs) < 2000, `longest log line: ${longest(keys.logs)} characters`);
});
