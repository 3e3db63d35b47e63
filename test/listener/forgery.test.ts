/**
 * Length-extension forgeries of `sha1(key + body)` signatures, made from the protocol's test vectors without the key,
 * and the bodies that must still pass: whatever Sellsy can send.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { request } from 'undici';
import { rawBytesOf } from '../../src/queue/contract.ts';
import { sign } from '../../src/sellsy/signature.ts';
import { extend } from '../helpers/length-extension.ts';
import { post, type TestListener, useTestListeners } from '../helpers/listener.ts';
import { KEY, VECTORS } from '../helpers/vectors.ts';

const JSON_TYPE = { 'content-type': 'application/json' };
const FORM_TYPE = { 'content-type': 'application/x-www-form-urlencoded' };

const { listener } = useTestListeners();

async function jobCount(l: TestListener): Promise<number> {
  return (await l.queue.getJobs(['waiting', 'active', 'completed', 'failed', 'delayed'])).length;
}

/** The form vector's event, as another event would read: the same record, deleted. */
const OTHER_EVENT = encodeURIComponent(
  '{"eventType":"thirdlog","event":"deleted","relatedtype":"third","relatedid":"38484","corpid":"138","timestamp":"1778280746"}',
);

test('regression: a length extension of a signed JSON body (padding, then "}") is refused 401 forbidden_bytes', async () => {
  const l = await listener({ SELLSY_SIGN_KEY: KEY });
  const forged = extend(VECTORS.json.body, VECTORS.json.signature, KEY.length, '}');
  const res = await post(l.url, forged.body, { ...JSON_TYPE, 'x-webhook-signature': forged.signature });
  assert.deepEqual([res.status, res.body.error], [401, 'forbidden_bytes']);
  assert.equal(await jobCount(l), 0, 'nothing queued');
  const refused = l.logs.find((line) => line.msg === 'delivery refused');
  assert.equal(refused?.outcome, 'forbidden_bytes');
  // The genuine delivery is still accepted.
  const genuine = await post(l.url, VECTORS.json.body, { ...JSON_TYPE, 'x-webhook-signature': VECTORS.json.signature });
  assert.equal(genuine.status, 200);
});

test('regression: a length extension of a signed form body with "&notif=<other event>" is refused 401 forbidden_bytes', async () => {
  const l = await listener({ SELLSY_SIGN_KEY: KEY });
  const forged = extend(VECTORS.form.body, VECTORS.form.signature, KEY.length, `&notif=${OTHER_EVENT}`);
  const res = await post(l.url, forged.body, { ...FORM_TYPE, 'x-webhook-signature': forged.signature });
  assert.deepEqual([res.status, res.body.error], [401, 'forbidden_bytes']);
  assert.equal(await jobCount(l), 0, 'nothing queued');
});

test('a signed form body with two notif fields is queued as an unknown job with parseProblem ambiguous_notif', async () => {
  const l = await listener({ SELLSY_SIGN_KEY: KEY });
  const body = Buffer.from(`${VECTORS.form.body}&notif=${OTHER_EVENT}`);
  const res = await post(l.url, body, { ...FORM_TYPE, 'x-webhook-signature': sign(KEY, body) });
  assert.equal(res.status, 200);
  const job = await l.queue.getJob(res.body.jobId as string);
  assert.equal(job?.name, 'unknown');
  assert.equal(job?.data.parseProblem, 'ambiguous_notif');
  assert.equal(job?.data.event, null);
  assert.ok(rawBytesOf(job.data).equals(body));
});

test('with SIGNATURE_FORM_SCOPE=notif, a length extension inside the notif value is refused and queues nothing', async () => {
  const l = await listener({ SELLSY_SIGN_KEY: KEY, SIGNATURE_FORM_SCOPE: 'notif' });
  const notif = Buffer.from(new URLSearchParams(VECTORS.form.body.toString()).get('notif') as string);
  const forged = extend(notif, VECTORS.form.notifSignature, KEY.length, ',"event":"deleted"}');
  const body = `notif=${[...forged.body].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')}`;
  const res = await post(l.url, body, { ...FORM_TYPE, 'x-webhook-signature': forged.signature });
  // Form decoding turns the padding's 0x80 into U+FFFD, so the signature no longer matches what is checked.
  assert.equal(res.status, 401);
  assert.match(res.body.error as string, /^(bad_signature|forbidden_bytes)$/);
  assert.equal(await jobCount(l), 0);
});

// What Sellsy may send: JSON (PHP escapes or raw UTF-8) or a form-encoded notif, signed over the raw body.
const sellsyBody = fc.oneof(
  fc.tuple(fc.json(), fc.constant('application/json')),
  fc.tuple(fc.string({ unit: 'grapheme', maxLength: 200 }), fc.constant('application/json; charset=utf-8')),
  fc.tuple(
    fc.json().map((s) => `notif=${encodeURIComponent(s)}`),
    fc.constant('application/x-www-form-urlencoded'),
  ),
  fc.tuple(
    fc.string({ unit: 'binary', maxLength: 200 }).map((s) => `notif=${encodeURIComponent(s.replaceAll('\0', ''))}`),
    fc.constant('application/x-www-form-urlencoded; charset=UTF-8'),
  ),
);

test('every signed body that is UTF-8 without NUL is accepted and queued byte for byte', async () => {
  const l = await listener({ SELLSY_SIGN_KEY: KEY, LOG_LEVEL: 'silent' });
  await fc.assert(
    fc.asyncProperty(sellsyBody, async ([text, contentType]) => {
      const body = Buffer.from(text.replaceAll('\0', ''), 'utf8');
      const response = await request(`${l.url}/webhook/sellsy`, {
        method: 'POST',
        body,
        headers: { 'content-type': contentType, 'x-webhook-signature': sign(KEY, body) },
      });
      const answer = (await response.body.json()) as { jobId: string; error?: string };
      assert.equal(response.statusCode, 200, `${JSON.stringify(answer)} for ${JSON.stringify(body.toString())}`);
      const job = await l.queue.getJob(answer.jobId);
      assert.ok(job && rawBytesOf(job.data).equals(body));
    }),
    { numRuns: 200 },
  );
});
