import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import { sign } from '../../src/sellsy/signature.ts';
import { accountOf, checkSignature, keysFor, signedBytesOf, verifyDelivery } from '../../src/sellsy/verify.ts';

const GLOBAL = 'GlobalKey';
const OWN = 'AccountKey929';
const withAccountKeys = loadConfig({ SELLSY_SIGN_KEY: GLOBAL, SELLSY_ACCOUNT_KEYS: JSON.stringify({ '929': OWN }) });

test('signedBytesOf takes the raw body unless the scope is notif and the form body has a notif', () => {
  const raw = Buffer.from('notif=%7B%7D');
  let asked = 0;
  const notif = () => {
    asked++;
    return '{}';
  };
  assert.deepEqual(signedBytesOf(raw, 'body', notif), { bytes: raw, scope: 'body' });
  assert.equal(asked, 0, 'notif is not decoded for the body scope');
  assert.deepEqual(signedBytesOf(raw, 'notif', notif), { bytes: '{}', scope: 'notif' });
  assert.deepEqual(
    signedBytesOf(raw, 'notif', () => null),
    { bytes: raw, scope: 'body' },
  );
});

test('an account with its own keys uses them only; any other account uses SELLSY_SIGN_KEY', () => {
  assert.deepEqual(keysFor(withAccountKeys, '929'), [OWN]);
  assert.deepEqual(keysFor(withAccountKeys, '930'), [GLOBAL]);
  assert.deepEqual(keysFor(withAccountKeys, null), [GLOBAL]);
});

test('accountOf: the corpid, else the path account; both must agree and, with account keys, be spelled canonically', () => {
  assert.deepEqual(accountOf(withAccountKeys, '929', null), { ok: true, account: '929' });
  assert.deepEqual(accountOf(withAccountKeys, undefined, '929'), { ok: true, account: '929' });
  assert.deepEqual(accountOf(withAccountKeys, '929', '930'), { ok: false, error: 'account_mismatch' });
  assert.deepEqual(accountOf(withAccountKeys, null, '0929'), { ok: false, error: 'bad_account' });
  assert.deepEqual(accountOf(withAccountKeys, 'a/b', null), { ok: false, error: 'bad_account' });
  assert.deepEqual(accountOf(loadConfig({ SELLSY_SIGN_KEY: GLOBAL }), null, '0929'), { ok: true, account: '0929' });
});

test('checkSignature: the account key verifies, the global key does not vouch for an account with its own keys', () => {
  const body = Buffer.from('{"relatedtype":"invoice","event":"step","corpid":"929"}');
  assert.deepEqual(checkSignature(withAccountKeys, '929', body, sign(OWN, body)), { ok: true, status: 'verified' });
  assert.deepEqual(checkSignature(withAccountKeys, '929', body, sign(GLOBAL, body)), {
    ok: false,
    error: 'bad_signature',
  });
  assert.deepEqual(checkSignature(withAccountKeys, '929', body, undefined), { ok: false, error: 'missing_signature' });
  const nul = Buffer.from('{"a":"\0"}');
  assert.deepEqual(checkSignature(withAccountKeys, null, nul, sign(GLOBAL, nul)), {
    ok: false,
    error: 'forbidden_bytes',
  });
  const accountOnly = loadConfig({ SELLSY_ACCOUNT_KEYS: JSON.stringify({ '929': OWN }) });
  assert.deepEqual(checkSignature(accountOnly, '930', body, sign(OWN, body)), { ok: false, error: 'unknown_account' });
});

test('verifyDelivery: not_configured without keys, unchecked with SIGNATURE_CHECK=worker, else the check', () => {
  const body = Buffer.from('{}');
  assert.deepEqual(verifyDelivery(loadConfig({}), null, body, undefined), { ok: true, status: 'not_configured' });
  const deferred = loadConfig({ SELLSY_SIGN_KEY: GLOBAL, SIGNATURE_CHECK: 'worker' });
  assert.deepEqual(verifyDelivery(deferred, null, body, 'nonsense'), { ok: true, status: 'unchecked' });
  assert.deepEqual(verifyDelivery(withAccountKeys, null, body, 'nonsense'), { ok: false, error: 'bad_signature' });
});
