/**
 * The documentation (README.md and docs/*.md) says only what exists: every `sellsy-webhooks` command it shows is a
 * real command with real flags (as `sellsy-webhooks help` lists them), every environment variable it names is read by
 * the service (or by the tests and benchmarks, for theirs), every variable is documented with its default in
 * docs/configuration.md and set to it in .env.example, every `npm run` script exists, every relative link and anchor
 * leads somewhere, every file of the repository it names is there, and the handler module docs/handlers.md shows
 * loads as the worker loads `HANDLERS`. The walkthrough's commands run in test/readme.test.ts.
 */

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { loadConfig } from '../src/config/config.ts';
import { ENV_NAMES, EnvSchema } from '../src/config/schema.ts';
import { PermanentError } from '../src/errors.ts';
import { createLogger } from '../src/logger.ts';
import { buildPipeline } from '../src/worker/pipeline.ts';
import { ROOT } from './helpers/cli.ts';
import { useTempDirs } from './helpers/temp-dirs.ts';

const tempDir = useTempDirs('sellsy-docs-handlers-');

const pages = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];
const text = (page: string) => readFileSync(join(ROOT, page), 'utf8');

/** Inline code spans, and the lines of fenced code blocks. */
function codeOf(page: string): string[] {
  const source = text(page);
  const code: string[] = [];
  const prose = source.replace(/```\w*\n([\s\S]*?)```/g, (_, block: string) => {
    code.push(...block.split('\n'));
    return '';
  });
  for (const [, span] of prose.matchAll(/`([^`\n]+)`/g)) code.push(span ?? '');
  // Spans broken across a line in prose.
  for (const [, span] of prose.matchAll(/`([^`]*\n[^`]*)`/g)) code.push((span ?? '').replace(/\s*\n\s*/g, ' '));
  return code;
}

/** Commands and their flags, from the help text (test/cli/help.snapshot.txt, which the CLI tests compare with the CLI's). */
function helpCommands(): Map<string, Set<string>> {
  const help = readFileSync(join(ROOT, 'test/cli/help.snapshot.txt'), 'utf8');
  const section = help.slice(help.indexOf('Commands:'), help.indexOf('\n\n', help.indexOf('Commands:')));
  const commands = new Map<string, Set<string>>();
  for (const line of section.split('\n')) {
    if (!/^ {2}[a-z]/.test(line)) continue;
    const usage = line.trim().split(/\s{2,}/)[0] ?? '';
    const words = usage.split(' ');
    const name = words.filter((w, i) => /^[a-z]+$/.test(w) && words.slice(0, i).every((p) => /^[a-z]+$/.test(p)));
    commands.set(name.join(' '), new Set(usage.match(/--[a-z-]+/g) ?? []));
  }
  return commands;
}

const GROUPS = ['spool', 'sellsy', 'destinations'];

test('every sellsy-webhooks command the docs show is a real command, with flags it takes', () => {
  const commands = helpCommands();
  assert.ok(commands.has('sellsy connect') && commands.has('start'), 'the help text lists the commands');
  const names = [...commands.keys()].map((name) => name.split(' ')[0]);
  let checked = 0;
  for (const page of pages) {
    for (const code of codeOf(page)) {
      // `sellsy-webhooks <command> …`, or a command with flags (`replay [--id ID]`, `sellsy connect … --sign-key`).
      const invocation =
        /sellsy-webhooks ([a-z][\s\S]*)$/.exec(code)?.[1] ??
        (names.some((n) => code.startsWith(`${n} `)) && code.includes('--') ? code : undefined);
      if (!invocation) continue;
      const words = invocation.split(/\s+/);
      const first = words[0] ?? '';
      const name = GROUPS.includes(first) ? `${first} ${words[1] ?? ''}` : first;
      assert.ok(
        commands.has(name),
        `${page}: "${code}" names the command "${name}", which sellsy-webhooks help does not list`,
      );
      for (const flag of invocation.match(/--[a-z][a-z-]*/g) ?? []) {
        assert.ok(commands.get(name)?.has(flag), `${page}: "${code}": ${name} takes no ${flag}`);
      }
      checked++;
    }
  }
  assert.ok(checked >= 10, `the docs show commands (${checked} checked)`);
});

/** The tests that read the docs: a name they quote is not a name anything reads. */
const DOC_TESTS = ['test/docs.test.ts', 'test/readme.test.ts'].map((path) => join(ROOT, path));

/** Files of the tests and benchmarks, where their own environment variables and flags are read. */
function sourcesUnder(...dirs: string[]): string {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (DOC_TESTS.includes(path)) continue;
      else if (/\.(ts|sh)$/.test(entry.name) || dir.endsWith('.ci')) out.push(readFileSync(path, 'utf8'));
    }
  };
  for (const dir of dirs) walk(join(ROOT, dir));
  return out.join('\n');
}

test('every environment variable the docs name exists: the service reads it, or the tests or benchmarks do', () => {
  const elsewhere = sourcesUnder('test', 'benchmarks', '.ci');
  const named = new Set<string>();
  for (const page of pages) {
    for (const [name] of text(page).matchAll(/\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b/g)) {
      named.add(name);
      if ((ENV_NAMES as string[]).includes(name)) continue;
      assert.ok(elsewhere.includes(name), `${page} names ${name}, which neither the service nor a test reads`);
    }
  }
  assert.ok(named.size >= ENV_NAMES.length, `the docs name every variable at least (${named.size} names)`);
});

test('docs/configuration.md documents every variable with its default, and .env.example sets it to that default', () => {
  const reference = text('docs/configuration.md');
  const example = text('.env.example');
  const rows = new Map<string, string>();
  for (const line of reference.split('\n')) {
    const [, names, defaults] = line.split('|').map((cell) => cell.trim());
    if (!names?.startsWith('`')) continue;
    for (const [, name] of names.matchAll(/`([A-Z_0-9]+)`/g)) rows.set(name ?? '', defaults ?? '');
  }
  for (const name of ENV_NAMES) {
    const cell = rows.get(name);
    assert.ok(cell !== undefined, `docs/configuration.md has no row for ${name}`);
    const schemaDefault = (EnvSchema.properties[name] as { default?: unknown }).default;
    const shown = schemaDefault === undefined ? '' : String(schemaDefault);
    if (shown === '') assert.equal(cell, 'unset', `${name} has no default`);
    else assert.ok(cell.startsWith(`\`${shown}\``), `${name}'s default is ${shown} (the page says ${cell})`);
    const set = new RegExp(`^${name}=(.*)$`, 'm').exec(example)?.[1];
    assert.equal(set, shown, `.env.example sets ${name}=${shown}`);
  }
  for (const name of rows.keys())
    assert.ok(
      (ENV_NAMES as string[]).includes(name),
      `docs/configuration.md documents ${name}, which the service does not read`,
    );
});

test('every npm script the docs run exists, and the benchmark flags they pass are read by the benchmarks', () => {
  const scripts = (JSON.parse(text('package.json')) as { scripts: Record<string, string> }).scripts;
  const benchmarks = sourcesUnder('benchmarks');
  let commands = 0;
  let flags = 0;
  for (const page of pages) {
    for (const code of codeOf(page)) {
      // `npm run <script> -- <flags>`, or flags shown on their own after the command (`-- --bursts 3 …`).
      const runs: [string | undefined, string | undefined][] = [
        ...code.matchAll(/npm run ([\w:-]+)(?: -- ([^`]*))?/g),
      ].map(([, script, args]) => [script, args]);
      const alone = /^\(?-- (--.*)$/.exec(code);
      if (alone) runs.push([undefined, alone[1]]);
      for (const [script, args] of runs) {
        if (script !== undefined) {
          assert.ok(scripts[script], `${page}: npm run ${script} is not a script of package.json`);
          commands++;
        }
        for (const flag of args?.match(/--[a-z][a-z-]*/g) ?? []) {
          flags++;
          assert.ok(
            benchmarks.includes(`'${flag.slice(2)}'`) || benchmarks.includes(flag),
            `${page}: no benchmark reads the flag ${flag}`,
          );
        }
      }
    }
  }
  assert.ok(commands >= 5 && flags >= 6, `the docs run npm scripts with flags (${commands} commands, ${flags} flags)`);
});

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens; repeats get -1, -2… */
function anchorsOf(page: string): Set<string> {
  const anchors = new Set<string>();
  const source = text(page).replace(/```[\s\S]*?```/g, '');
  for (const [, heading] of source.matchAll(/^#{1,6} (.+)$/gm)) {
    const slug = (heading ?? '')
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');
    let anchor = slug;
    for (let i = 1; anchors.has(anchor); i++) anchor = `${slug}-${i}`;
    anchors.add(anchor);
  }
  return anchors;
}

test('every relative link in README.md and docs/ leads to a file of the repository, and to a heading in it', () => {
  let checked = 0;
  for (const page of pages) {
    const source = text(page).replace(/```[\s\S]*?```/g, '');
    for (const [, target] of source.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (!target || /^[a-z]+:/.test(target)) continue;
      const [path, anchor] = target.split('#');
      const file = path ? relative(ROOT, resolve(dirname(join(ROOT, page)), path)) : page;
      assert.ok(
        !file.startsWith('..') && existsSync(join(ROOT, file)),
        `${page}: ${target} leads to ${file}, which is not a file of the repository`,
      );
      if (anchor !== undefined) {
        assert.ok(anchorsOf(file).has(anchor), `${page}: ${target}: ${file} has no heading #${anchor}`);
      }
      checked++;
    }
  }
  assert.ok(checked >= 30, `the docs link to each other (${checked} links)`);
});

test('every file or folder of the repository the docs name in code is there', () => {
  let checked = 0;
  for (const page of pages) {
    for (const code of codeOf(page)) {
      for (const [path] of code.matchAll(/(?<![\w/.])(?:src|test|benchmarks|deploy|docs|\.ci)\/[\w./-]*[\w/]/g)) {
        if (/\.\.\./.test(path)) continue;
        assert.ok(existsSync(join(ROOT, path)), `${page} names ${path}, which is not in the repository`);
        if (path.endsWith('/'))
          assert.ok(statSync(join(ROOT, path)).isDirectory(), `${page} names ${path} as a folder, which it is not`);
        checked++;
      }
    }
  }
  assert.ok(checked >= 20, `the docs name the repository's files (${checked} paths)`);
});

test('the handler module docs/handlers.md shows loads as HANDLERS, and its unknown handler fails for good', async () => {
  const example = /```js\n([\s\S]*?)```/.exec(text('docs/handlers.md'))?.[1];
  assert.ok(example, 'docs/handlers.md shows a handler module');
  const path = join(tempDir(), 'handlers.mjs');
  // The page's module as written, importing the package from the sources, with the functions it leaves to the reader.
  const entry = pathToFileURL(join(ROOT, 'src/index.ts')).href;
  const stubs =
    'const myErp = { upsertInvoice: async () => {} };\nconst archiveCompany = async () => {};\nconst notifySales = async () => {};\n';
  writeFileSync(path, stubs + example.replace(/from 'sellsy-webhooks'/, `from ${JSON.stringify(entry)}`));
  const pipeline = await buildPipeline(loadConfig({ HANDLERS: path }), createLogger('silent'));
  try {
    assert.deepEqual(
      pipeline.handlers.map((r) => `${r.source}:${r.pattern}`),
      ['user:invoice.*', 'user:third.deleted', 'user:third.deleted', 'user:unknown'],
    );
    const unknown = pipeline.handlers.find((r) => r.pattern === 'unknown');
    const context = { data: { rawBody: 'x', parseProblem: 'invalid_json' } } as unknown as Parameters<
      NonNullable<typeof unknown>['handler']
    >[1];
    await assert.rejects(unknown?.handler(null, context) ?? Promise.resolve(), PermanentError);
  } finally {
    await pipeline.close();
  }
});
