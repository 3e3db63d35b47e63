/** What the operator commands print goes through `scrubbing`: no configured secret reaches the terminal. */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { scrubbing } from '../../src/cli/secrets.ts';
import { loadConfig } from '../../src/config/config.ts';

test('scrubbing replaces every configured secret, a percent-encoded Redis password in both forms', () => {
  const secrets = {
    SELLSY_SIGN_KEY: 'sign-key-one-0123,sign-key-two-4567',
    SELLSY_ACCOUNT_KEYS: '{"929":"account-key-89ab"}',
    FORWARD_URL: 'https://target.example.com/hook',
    FORWARD_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
    SELLSY_CLIENT_ID: 'client-id',
    SELLSY_CLIENT_SECRET: 'client-secret-cdef',
    ADMIN_USER: 'admin',
    ADMIN_PASSWORD: 'admin-password-0011',
    ADMIN_TOKEN: 'admin-token-2233445566778899',
    DATABASE_URL: 'postgres://app:pg-password-77@127.0.0.1:5432/test',
    REDIS_SENTINELS: '127.0.0.1:26379',
    REDIS_SENTINEL_PASSWORD: 'sentinel-password-44',
  };
  const config = loadConfig({ ...secrets, REDIS_URL: 'redis://:p%40ss-word-99@127.0.0.1:6379' });
  const lines: string[] = [];
  const out = scrubbing(config, (line) => lines.push(line));
  const values = [
    'sign-key-one-0123',
    'sign-key-two-4567',
    'account-key-89ab',
    secrets.FORWARD_SECRET,
    secrets.SELLSY_CLIENT_SECRET,
    secrets.ADMIN_PASSWORD,
    secrets.ADMIN_TOKEN,
    'pg-password-77',
    'sentinel-password-44',
    'p%40ss-word-99',
    'p@ss-word-99',
  ];
  for (const value of values) out(`before ${value} after`);
  assert.deepEqual(
    lines,
    values.map(() => 'before *** after'),
  );
});
