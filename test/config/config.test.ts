import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig, signatureEnabled } from '../../src/config/config.ts';
import { ConfigError } from '../../src/errors.ts';

test('defaults match the documented ones', () => {
  const config = loadConfig({});
  assert.equal(config.port, 3000);
  assert.equal(config.host, '0.0.0.0');
  assert.equal(config.redisUrl, 'redis://127.0.0.1:6379');
  assert.equal(config.queueName, 'sellsy-webhooks');
  assert.equal(config.queuePrefix, 'bull');
  assert.equal(config.bodyLimitBytes, 1024 * 1024);
  assert.equal(config.dedupWindowSeconds, 72 * 3600);
  assert.equal(config.enqueueFailureStatus, 200);
  assert.equal(config.signature.check, 'listener');
  assert.equal(config.signature.formScope, 'body');
  assert.equal(signatureEnabled(config), false);
});

test('the configuration is frozen', () => {
  const config = loadConfig({});
  assert.throws(() => {
    (config as { port: number }).port = 1;
  }, TypeError);
});

test('several comma-separated keys are trimmed and empty ones dropped', () => {
  const config = loadConfig({ SELLSY_SIGN_KEY: ' a , b,,' });
  assert.deepEqual(config.signature.keys, ['a', 'b']);
  assert.equal(signatureEnabled(config), true);
});

test('per-account keys accept a key or a list of keys', () => {
  const config = loadConfig({ SELLSY_ACCOUNT_KEYS: '{"929":"k1","138":["k2","k3"]}' });
  assert.deepEqual(config.signature.accountKeys.get('929'), ['k1']);
  assert.deepEqual(config.signature.accountKeys.get('138'), ['k2', 'k3']);
});

test('every bad value is reported at once', () => {
  try {
    loadConfig({ PORT: '70000', QUEUE_NAME: 'a:b', LOG_LEVEL: 'loud', BODY_LIMIT_BYTES: '10' });
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.code, 'SW_ERR_CONFIG');
    const names = err.problems.map((p) => p.split(':')[0]);
    assert.deepEqual(names.sort(), ['BODY_LIMIT_BYTES', 'LOG_LEVEL', 'PORT', 'QUEUE_NAME']);
  }
});

test('an account with an empty key list is refused', () => {
  assert.throws(() => loadConfig({ SELLSY_ACCOUNT_KEYS: '{"929":[]}' }), /SELLSY_ACCOUNT_KEYS: account "929"/);
});

test('empty variables mean unset', () => {
  assert.equal(loadConfig({ PORT: '' }).port, 3000);
});

test('a SELLSY_SIGN_KEY with no key in it is refused instead of silently turning verification off', () => {
  assert.throws(() => loadConfig({ SELLSY_SIGN_KEY: ' , ' }), /SELLSY_SIGN_KEY: is set but holds no key/);
});

test('timers are bounded (Node timers overflow past 2^31 - 1 ms)', () => {
  assert.throws(() => loadConfig({ ENQUEUE_TIMEOUT_MS: '3000000000' }), /ENQUEUE_TIMEOUT_MS: must be <= 600000/);
});
