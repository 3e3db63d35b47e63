/** The dashboard's login check, alone: which `Authorization` headers open the dashboard. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { credentialsCheck } from '../../src/dashboard/credentials.ts';

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

test('a login opens with Basic credentials only, and tells a missing header from a wrong one', () => {
  const check = credentialsCheck({ user: 'admin', password: 'pass:word', token: null, allowRetries: false });
  assert.equal(check(basic('admin', 'pass:word')), 'ok');
  assert.equal(check(`basic ${Buffer.from('admin:pass:word').toString('base64')}`), 'ok');
  assert.equal(check(basic('admin', 'pass:wor')), 'wrong');
  assert.equal(check(basic('root', 'pass:word')), 'wrong');
  assert.equal(check('Basic bm8tY29sb24'), 'wrong');
  assert.equal(check('Bearer pass:word'), 'wrong');
  assert.equal(check(undefined), 'missing');
  assert.equal(check(''), 'missing');
});

test('a token opens with a Bearer header only', () => {
  const check = credentialsCheck({ user: null, password: null, token: 'tok_0123456789', allowRetries: false });
  assert.equal(check('Bearer tok_0123456789'), 'ok');
  assert.equal(check('Bearer  tok_0123456789 '), 'ok');
  assert.equal(check('Bearer tok_012345678'), 'wrong');
  assert.equal(check('Bearer'), 'wrong');
  assert.equal(check(basic('admin', 'tok_0123456789')), 'wrong');
});
