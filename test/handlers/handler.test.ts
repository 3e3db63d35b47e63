import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defineHandlers, type Handler, handlersFor, type Registration } from '../../src/handlers/handler.ts';

const noop: Handler = async () => undefined;
const registrations: Registration[] = [
  { pattern: '*', handler: noop, source: 'forward' },
  { pattern: 'invoice.*', handler: noop, source: 'sellsy-fetch' },
  { pattern: 'invoice.step', handler: noop, source: 'user' },
  { pattern: 'unknown', handler: noop, source: 'user' },
  { pattern: '*.deleted', handler: noop, source: 'user' },
];
const chain = (name: string) => handlersFor(registrations, name).map((r) => `${r.source}:${r.pattern}`);

test('handlersFor: the registrations whose pattern matches a job name, in registration order', () => {
  assert.deepEqual(chain('invoice.step'), ['forward:*', 'sellsy-fetch:invoice.*', 'user:invoice.step']);
  assert.deepEqual(chain('invoice.deleted'), ['forward:*', 'sellsy-fetch:invoice.*', 'user:*.deleted']);
  assert.deepEqual(chain('people.updated'), ['forward:*']);
});

test('handlersFor: an unparsed delivery reaches only handlers registered for "unknown" by name', () => {
  assert.deepEqual(chain('unknown'), ['user:unknown']);
});

test('defineHandlers returns the map it is given, unchanged', () => {
  const map = { 'invoice.*': noop, '*.deleted': [noop, noop] };
  assert.equal(defineHandlers(map), map);
});
