/** How the operator commands show ages, sizes and messages. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatAge, formatBytes, oneLine } from '../../src/cli/format.ts';

test('an age is shown in seconds, minutes, hours or days, whichever reads best', () => {
  assert.equal(formatAge(42.4), '42 s');
  assert.equal(formatAge(119), '119 s');
  assert.equal(formatAge(420), '7 min');
  assert.equal(formatAge(3.5 * 3600), '3.5 h');
  assert.equal(formatAge(2.1 * 86_400), '2.1 d');
});

test('a size is shown in MiB, or GiB from one GiB', () => {
  assert.equal(formatBytes(0), '0.00 MiB');
  assert.equal(formatBytes(1.5 * 1024 ** 2), '1.50 MiB');
  assert.equal(formatBytes(12.3 * 1024 ** 3), '12.3 GiB');
});

test('a message is put on one line and cut to its maximum length', () => {
  assert.equal(oneLine('Error: boom\n    at f (a.js:1)\r\n  at g'), 'Error: boom at f (a.js:1) at g');
  assert.equal(oneLine('x'.repeat(200), 10), `${'x'.repeat(9)}…`);
  assert.equal(oneLine('short', 10), 'short');
});
