/** An operator command's flags: their values, or the usage error to print. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseFlags } from '../../src/cli/flags.ts';

const OPTIONS = { json: { type: 'boolean' }, limit: { type: 'string' } } as const;

test('known flags give their values', () => {
  assert.deepEqual(
    { ...(parseFlags(['--json', '--limit', '5'], OPTIONS, 'usage: x') as object) },
    { json: true, limit: '5' },
  );
});

test('an unknown flag or a positional argument gives the parser message, then the usage', () => {
  for (const args of [['--nope'], ['extra']]) {
    const result = parseFlags(args, OPTIONS, 'usage: x [--json] [--limit N]');
    assert.equal(typeof result, 'string');
    assert.match(result as string, /\nusage: x \[--json\] \[--limit N\]$/);
  }
});
