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

test('sellsy-fetch with several accounts in SELLSY_ACCOUNT_KEYS and one without API credentials is refused at start', () => {
  const env = {
    SELLSY_ACCOUNT_KEYS: '{"929":"k1","138":"k2"}',
    SELLSY_CLIENT_ID: 'id',
    SELLSY_CLIENT_SECRET: 'secret',
  };
  assert.throws(
    () => loadConfig(env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /SELLSY_ACCOUNT_CREDENTIALS: .*no API credentials for "138", "929"/);
      return true;
    },
  );
  assert.throws(() => loadConfig({ ...env, SELLSY_ACCOUNT_ID: '929' }), /no API credentials for "138"/);
  const both = loadConfig({
    ...env,
    SELLSY_ACCOUNT_ID: '929',
    SELLSY_ACCOUNT_CREDENTIALS: '{"138":{"clientId":"id-138","clientSecret":"secret-138"}}',
  });
  assert.deepEqual(both.sellsyFetch?.credentials.get('138'), { clientId: 'id-138', clientSecret: 'secret-138' });
  assert.equal(both.sellsyFetch?.accountId, '929');
  assert.equal(both.worker.recordOrder, 'latest');
});

test('one account key and one API client (the quick start) is valid as it is', () => {
  const config = loadConfig({ SELLSY_ACCOUNT_KEYS: '{"929":"k1"}', SELLSY_CLIENT_ID: 'id', SELLSY_CLIENT_SECRET: 's' });
  assert.equal(config.sellsyFetch?.accountId, null);
  assert.equal(config.sellsyFetch?.credentials.size, 0);
});

test('SELLSY_ACCOUNT_CREDENTIALS that is not a map of clientId and clientSecret is named, its value not shown', () => {
  assert.throws(
    () => loadConfig({ SELLSY_ACCOUNT_CREDENTIALS: '{"138":{"clientId":"id-138","secret":"top-secret-value"}}' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(
        err.message,
        /SELLSY_ACCOUNT_CREDENTIALS: account "138" needs a non-empty "clientId" and "clientSecret"/,
      );
      assert.doesNotMatch(err.message, /top-secret-value/);
      return true;
    },
  );
  assert.throws(
    () => loadConfig({ SELLSY_ACCOUNT_CREDENTIALS: 'nope' }),
    /SELLSY_ACCOUNT_CREDENTIALS: must be a JSON object/,
  );
  assert.throws(
    () => loadConfig({ SELLSY_ACCOUNT_ID: '929' }),
    /SELLSY_ACCOUNT_ID: names the account of SELLSY_CLIENT_ID/,
  );
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

test('configuration errors never repeat a secret, and mask passwords in URLs', () => {
  try {
    loadConfig({
      FORWARD_URL: 'http://app.internal/hooks',
      FORWARD_SECRET: 'supersecretvalue',
      DATABASE_URL: 'mysql://admin:hunter2@db:3306/x',
    });
    assert.fail('loadConfig accepted bad values');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    const text = err.problems.join('\n');
    assert.match(text, /FORWARD_SECRET: must match pattern "\^whsec_" \(got a value of 16 characters, not shown\)/);
    assert.match(text, /DATABASE_URL: .*"mysql:\/\/admin:\*\*\*@db:3306\/x"/);
    assert.ok(!text.includes('supersecretvalue') && !text.includes('hunter2'));
  }
});

test('FORWARD_URL with credentials, or without FORWARD_SECRET, is refused at start', () => {
  const secret = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
  assert.throws(
    () => loadConfig({ FORWARD_URL: 'https://user:pw@app.internal/hooks', FORWARD_SECRET: secret }),
    /FORWARD_URL: must not hold credentials/,
  );
  assert.throws(() => loadConfig({ FORWARD_URL: 'https://app.internal/hooks' }), /FORWARD_SECRET: is required/);
  assert.throws(
    () => loadConfig({ FORWARD_URL: 'https://app.internal/hooks', FORWARD_SECRET: 'whsec_c2hvcnQ=' }),
    /FORWARD_SECRET: must be whsec_ followed by base64 of 24 to 64 random bytes.*\(got a secret of 5 bytes\)/,
  );
  const ok = loadConfig({ FORWARD_URL: 'https://app.internal/hooks', FORWARD_SECRET: secret });
  assert.deepEqual(ok.forward, { url: 'https://app.internal/hooks', secret, timeoutMs: 10_000 });
  assert.equal(ok.worker.recordOrder, 'off', 'RECORD_ORDER=auto without sellsy-fetch');
});

test('Redis topology: one server by default, Sentinel or Cluster from their variables', () => {
  assert.deepEqual(loadConfig({}).redis, { kind: 'standalone', url: 'redis://127.0.0.1:6379' });
  assert.equal(loadConfig({}).redisWaitReplicas, 0);

  const sentinel = loadConfig({
    REDIS_URL: 'rediss://:data-secret@unused/2',
    REDIS_SENTINELS: ' 10.0.0.1:26379, [::1]:26380 ,',
    REDIS_SENTINEL_PASSWORD: 'sentinel-secret',
  });
  assert.deepEqual(sentinel.redis, {
    kind: 'sentinel',
    url: 'rediss://:data-secret@unused/2',
    sentinels: [
      { host: '10.0.0.1', port: 26379 },
      { host: '::1', port: 26380 },
    ],
    masterName: 'mymaster',
    sentinelUsername: null,
    sentinelPassword: 'sentinel-secret',
    sentinelTls: false,
  });
  assert.equal(sentinel.redisWaitReplicas, 1, 'Sentinel implies replicas: a 200 waits for one');
  assert.equal(sentinel.queuePrefix, 'bull');
  assert.equal(loadConfig({ REDIS_SENTINELS: 'a:1', REDIS_WAIT_REPLICAS: '0' }).redisWaitReplicas, 0);

  const cluster = loadConfig({ REDIS_CLUSTER_NODES: 'n1:7000,n2:7001' });
  assert.equal(cluster.redis.kind, 'cluster');
  assert.equal(cluster.queuePrefix, '{bull}', 'a hash tag keeps every key of a queue in one slot');
  assert.equal(
    loadConfig({ REDIS_CLUSTER_NODES: 'n1:7000', QUEUE_NAME: '{hooks}', QUEUE_PREFIX: 'p' }).queuePrefix,
    'p',
  );
});

test('impossible Redis topologies are named at start', () => {
  const problems = (env: Record<string, string>): string => {
    try {
      loadConfig(env);
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.message;
    }
    assert.fail('accepted');
  };
  assert.match(problems({ REDIS_SENTINELS: 'a:1', REDIS_CLUSTER_NODES: 'b:2' }), /set one or the other/);
  assert.match(problems({ REDIS_CLUSTER_NODES: 'b:2', REDIS_URL: 'redis://x/3' }), /Cluster has only database 0/);
  assert.match(problems({ REDIS_SENTINELS: 'a:1,b' }), /REDIS_SENTINELS: "b" is not host:port/);
  assert.match(problems({ REDIS_CLUSTER_NODES: 'b:70000' }), /REDIS_CLUSTER_NODES: "b:70000" is not host:port/);
  assert.match(problems({ REDIS_CLUSTER_NODES: ' , ' }), /names no host:port/);
  assert.match(problems({ REDIS_SENTINEL_PASSWORD: 'pw-secret-1' }), /only used with REDIS_SENTINELS/);
  assert.match(problems({ REDIS_CLUSTER_NODES: 'b:2', QUEUE_PREFIX: 'bull' }), /QUEUE_PREFIX: .*hash tag/);
  assert.match(problems({ REDIS_WAIT_REPLICAS: '-1' }), /REDIS_WAIT_REPLICAS/);
  const secret = problems({ REDIS_SENTINELS: 'a', REDIS_SENTINEL_PASSWORD: 'pw-secret-1' });
  assert.ok(!secret.includes('pw-secret-1'));
});

test('the periodic reconcile is off by default; on, it needs API credentials and the single client its account', () => {
  assert.deepEqual(loadConfig({}).reconcile, {
    intervalSeconds: 0,
    overlapSeconds: 300,
    lookbackSeconds: 30 * 24 * 3600,
    quotaShare: 0.5,
  });
  assert.throws(
    () => loadConfig({ RECONCILE_INTERVAL_SECONDS: '900' }),
    /RECONCILE_INTERVAL_SECONDS: the periodic reconcile reads the Sellsy API/,
  );
  const api = { SELLSY_CLIENT_ID: 'id', SELLSY_CLIENT_SECRET: 'secret', RECONCILE_INTERVAL_SECONDS: '900' };
  assert.throws(() => loadConfig(api), /SELLSY_ACCOUNT_ID: the periodic reconcile/);
  assert.equal(loadConfig({ ...api, SELLSY_ACCOUNT_ID: '929' }).reconcile.intervalSeconds, 900);
  for (const share of ['0', '1.5', 'half']) {
    assert.throws(() => loadConfig({ RECONCILE_QUOTA_SHARE: share }), /RECONCILE_QUOTA_SHARE/);
  }
  assert.throws(() => loadConfig({ RECONCILE_OVERLAP_SECONDS: '-1' }), /RECONCILE_OVERLAP_SECONDS/);
});
