import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import { deferredRefusal, rawBodyFields, type WebhookJobData } from '../../src/queue/contract.ts';
import { parseDelivery } from '../../src/sellsy/payload.ts';
import { sign } from '../../src/sellsy/signature.ts';

const KEY = 'GlobalKey';
const config = loadConfig({ SELLSY_SIGN_KEY: KEY, SIGNATURE_CHECK: 'worker' });

function job(raw: Buffer, contentType: string, signature: WebhookJobData['signature']): WebhookJobData {
  const parsed = parseDelivery(raw, contentType);
  return {
    v: 1,
    deliveryId: 'd',
    receivedAt: new Date(0).toISOString(),
    contentType,
    ...rawBodyFields(raw),
    account: null,
    signature,
    event: parsed.event,
    parseProblem: parsed.problem,
    dedupKey: 'k',
    request: { id: 'r', path: '/webhook/sellsy', ip: '127.0.0.1', userAgent: null },
  };
}

test('deferredRefusal checks an unchecked job as the listener would, and leaves any other job alone', () => {
  const raw = Buffer.from('{"relatedtype":"invoice","event":"step","relatedid":"1"}');
  const type = 'application/json';
  assert.equal(
    deferredRefusal(config, job(raw, type, { status: 'unchecked', header: sign(KEY, raw), scope: 'body' })),
    null,
  );
  assert.equal(
    deferredRefusal(config, job(raw, type, { status: 'unchecked', header: sign('other', raw), scope: 'body' })),
    'bad_signature',
  );
  assert.equal(deferredRefusal(config, job(raw, type, { status: 'verified', header: null, scope: 'body' })), null);
});

test('deferredRefusal checks a notif-scope job over the decoded notif value', () => {
  const notif = '{"relatedtype":"invoice","event":"step","relatedid":"1"}';
  const raw = Buffer.from(`notif=${encodeURIComponent(notif)}&extra=1`);
  const form = 'application/x-www-form-urlencoded';
  const over = (header: string) => job(raw, form, { status: 'unchecked', header, scope: 'notif' });
  assert.equal(deferredRefusal(config, over(sign(KEY, notif))), null);
  assert.equal(deferredRefusal(config, over(sign(KEY, raw))), 'bad_signature');
});
