import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { loadConfig } from '../../src/config/config.ts';
import { ConfigError } from '../../src/errors.ts';
import { createLogger } from '../../src/logger.ts';
import { buildPipeline } from '../../src/worker/pipeline.ts';
import { ROOT } from '../helpers/cli.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sellsy-handlers-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const log = createLogger('silent');
const entry = pathToFileURL(join(ROOT, 'src/index.ts')).href;

async function moduleFile(name: string, source: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, source);
  return path;
}

test('HANDLERS loads a module written as the README shows (default export, the package entry)', async () => {
  const path = await moduleFile(
    'handlers.mjs',
    `import { defineHandlers, PermanentError } from ${JSON.stringify(entry)};
     export default defineHandlers({
       'invoice.*': async () => {},
       'third.deleted': [async () => {}, async () => {}],
       unknown: async () => { throw new PermanentError('no'); },
     });`,
  );
  const pipeline = await buildPipeline(loadConfig({ HANDLERS: path }), log);
  try {
    assert.deepEqual(
      pipeline.handlers.map((r) => `${r.source}:${r.pattern}`),
      ['user:invoice.*', 'user:third.deleted', 'user:third.deleted', 'user:unknown'],
    );
  } finally {
    await pipeline.close();
  }
});

test('a "handlers" named export works too', async () => {
  const path = await moduleFile('named.mjs', `export const handlers = { '*': async () => {} };`);
  const pipeline = await buildPipeline(loadConfig({ HANDLERS: path }), log);
  assert.deepEqual(
    pipeline.handlers.map((r) => r.pattern),
    ['*'],
  );
  await pipeline.close();
});

test('a bad handler module stops the start with each problem named', async () => {
  const bad = await moduleFile(
    'bad.mjs',
    `export default { 'invoice': async () => {}, 'a.b.c': async () => {}, 'third.*': 'not a function', '*': [] };`,
  );
  await assert.rejects(buildPipeline(loadConfig({ HANDLERS: bad }), log), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.problems.length, 4);
    assert.match(err.problems[0] ?? '', /^HANDLERS: "invoice" is not a pattern/);
    assert.match(err.problems[2] ?? '', /"third\.\*" must map to an async function/);
    return true;
  });
  await assert.rejects(buildPipeline(loadConfig({ HANDLERS: join(dir, 'missing.mjs') }), log), /HANDLERS: cannot load/);
  const empty = await moduleFile('empty.mjs', 'export const x = 1;');
  await assert.rejects(
    buildPipeline(loadConfig({ HANDLERS: empty }), log),
    /must export \(as default or as "handlers"\)/,
  );
});
