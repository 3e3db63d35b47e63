import assert from 'node:assert/strict';
import { test } from 'node:test';
import { matches } from '../../src/handlers/handler.ts';

test('patterns: exact names, <type>.*, *.<verb>, * for every parsed event, unknown only by name', () => {
  assert.ok(matches('invoice.step', 'invoice.step'));
  assert.ok(!matches('invoice.step', 'invoice.created'));
  assert.ok(matches('invoice.*', 'invoice.created'));
  assert.ok(!matches('invoice.*', 'estimate.created'));
  assert.ok(matches('*.deleted', 'third.deleted'));
  assert.ok(!matches('*.deleted', 'third.updated'));
  assert.ok(matches('*', 'people.updated'));
  assert.ok(!matches('*', 'unknown'));
  assert.ok(!matches('*.*', 'unknown'));
  assert.ok(matches('unknown', 'unknown'));
});
