/**
 * The command line: usage, help, configuration errors and the short commands run in this process through `dispatch`
 * (test/helpers/dispatch.ts); a real process only where one is the point: a running service's logs, signals and
 * terminal, and the built bin once.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { stripVTControlCharacters } from 'node:util';
import { ENV_NAMES } from '../../src/config/schema.ts';
import { ROOT, spawnCli, tempSpoolDir } from '../helpers/cli.ts';
import { runDispatch, startDispatch } from '../helpers/dispatch.ts';
import { freePort, RedisServer } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

test('help lists every command and every environment variable', async () => {
  const result = await runDispatch(['--help']);
  assert.equal(result.status, 0);
  for (const command of [
    'start',
    'listen',
    'work',
    'doctor',
    'stats',
    'replay',
    'backfill',
    'spool status',
    'sellsy connect',
  ]) {
    assert.match(result.stdout, new RegExp(`^  ${command}\\b`, 'm'), `help lists ${command}`);
  }
  for (const name of ENV_NAMES) assert.ok(result.stdout.includes(name), `help mentions ${name}`);
});

test('help matches its snapshot (UPDATE_SNAPSHOTS=1 rewrites it)', async () => {
  const result = await runDispatch(['help']);
  const file = join(ROOT, 'test/cli/help.snapshot.txt');
  if (process.env.UPDATE_SNAPSHOTS === '1') writeFileSync(file, result.stdout);
  assert.equal(result.stdout, readFileSync(file, 'utf8'));
});

test('operator commands check their arguments before anything else: exit 2 with the reason', async () => {
  for (const [args, reason] of [
    [['spool', 'shrink'], /spool: unknown spool command "shrink"/],
    [['sellsy'], /sellsy: unknown sellsy command ""/],
    [['sellsy', 'connect', '--url', 'http://example.com/webhook/sellsy'], /sellsy: .*https/],
    [['replay', '--until', 'soon'], /replay: --until "soon" is not a date/],
    [['stats', '--jsno'], /stats: unexpected argument "--jsno"/],
    [['doctor', 'now'], /doctor: unexpected argument "now"/],
    [['backfill'], /backfill: --since is required/],
    [['backfill', '--since', 'yesterday'], /backfill: --since "yesterday" is neither a date/],
    [['backfill', '--since', '24h', '--types', 'companies,widgets'], /backfill: --types: unknown "widgets"/],
  ] as const) {
    const result = await runDispatch([...args]);
    assert.equal(result.status, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, reason);
  }
});

test('doctor against an unreachable Redis prints a fail line with the fix and exits 1', async () => {
  const result = await runDispatch(['doctor'], {
    REDIS_URL: `redis://127.0.0.1:${await freePort()}`,
    SPOOL_DIR: tempSpoolDir(),
  });
  assert.equal(result.status, 1, result.stderr);
  assert.match(result.stdout, /^fail\s+redis: /m);
  assert.match(result.stdout, /^\s+fix: /m);
});

test('an unknown command exits 2 with the usage', async () => {
  const result = await runDispatch(['frobnicate']);
  assert.equal(result.status, 2);
  assert.match(result.stderr, /Unknown command "frobnicate"/);
  assert.match(result.stderr, /Usage: sellsy-webhooks/);
});

test('bad settings stop the start with exit code 78 and name each variable', async () => {
  const result = await runDispatch(['listen'], {
    PORT: 'http',
    SIGNATURE_CHECK: 'maybe',
    SELLSY_ACCOUNT_KEYS: '',
    ENQUEUE_FAILURE_STATUS: '500',
  });
  assert.equal(result.status, 78);
  assert.match(result.stderr, /PORT: must be integer \(got "http"\)/);
  assert.match(result.stderr, /SIGNATURE_CHECK: must be one of listener, worker \(got "maybe"\)/);
  assert.match(result.stderr, /ENQUEUE_FAILURE_STATUS: must be one of 200, 503 \(got "500"\)/);
});

test('a malformed SELLSY_ACCOUNT_KEYS is named at start', async () => {
  const result = await runDispatch(['listen'], { SELLSY_ACCOUNT_KEYS: '929=key' });
  assert.equal(result.status, 78);
  assert.match(result.stderr, /SELLSY_ACCOUNT_KEYS: must be a JSON object/);
});

test('.env.example and the README document every variable, with its default', () => {
  const example = readFileSync(join(ROOT, '.env.example'), 'utf8');
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  for (const name of ENV_NAMES) {
    assert.match(example, new RegExp(`^${name}=`, 'm'), `.env.example sets ${name}`);
    assert.ok(readme.includes(`\`${name}\``), `README documents ${name}`);
  }
});

test('at start the listener logs a warning for each Redis setting that can lose jobs', async (t) => {
  const redis = new RedisServer(await freePort(), ['--appendonly', 'no', '--maxmemory-policy', 'allkeys-lru']);
  t.after(() => redis.destroy());
  await redis.start();
  const cli = await startDispatch(['listen'], {
    PORT: String(await freePort()),
    HOST: '127.0.0.1',
    REDIS_URL: redis.url,
    SPOOL_DIR: tempSpoolDir(),
  });
  try {
    assert.equal(cli.status, 0, cli.stderr);
    const warnings = () => cli.logs.map((line) => JSON.parse(line)).filter((line) => line.level === 40);
    await waitFor(() => warnings().some((w) => /AOF is off/.test(w.msg)), 20_000, 'the AOF warning');
    await waitFor(
      () => warnings().some((w) => /maxmemory-policy is "allkeys-lru"/.test(w.msg)),
      5_000,
      'the eviction warning',
    );
    // And one line says what a confirmed job survives with these settings.
    const connected = cli.logs.map((line) => JSON.parse(line)).find((l) => /^redis connected: /.test(l.msg));
    assert.match(connected?.msg ?? '', /survives a listener crash, but not a Redis restart \(AOF off\)/);
  } finally {
    await cli.close();
  }
});

test('version prints the package version, from the sources as from the build', async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  assert.equal((await runDispatch(['version'])).stdout.trim(), pkg.version);
  // The built bin, as npm installs it: the one run of the executable that tsx does not load.
  const bin = join(ROOT, 'dist/src/cli.js');
  if (!existsSync(bin)) {
    t.skip('dist/ is not built (npm run build; npm test builds it first)');
    return;
  }
  const built = spawnSync(process.execPath, [bin, 'version'], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  assert.equal(built.status, 0, built.stderr);
  assert.equal(built.stdout.trim(), pkg.version);
});

/**
 * Runs the CLI until a line matching `until` is printed (or 60 s), then stops it; returns what it printed. The
 * service's own pid, read from its log (`"pid":…` or pino-pretty's `(pid)`), is killed too: under `script` it is
 * not the child, and left behind on a closed terminal it would go on using CPU beside the next tests.
 */
async function outputUntil(file: string, args: string[], env: NodeJS.ProcessEnv, until: RegExp): Promise<string> {
  const child = spawn(file, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'inherit'] });
  let text = '';
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${until} within 60 s:\n${text}`)), 60_000);
      child.stdout.on('data', (chunk: Buffer) => {
        text += chunk.toString('utf8');
        if (until.test(text)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } finally {
    const pid = Number(/"pid":(\d+)|\((\d+)\)/.exec(stripVTControlCharacters(text))?.slice(1).find(Boolean));
    if (pid > 0 && pid !== child.pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    child.kill('SIGKILL');
  }
  return text;
}

test('SIGTERM with Redis unreachable stops a worker at once, without waiting out SHUTDOWN_TIMEOUT_MS', async () => {
  const cli = spawnCli(['work'], { REDIS_URL: `redis://127.0.0.1:${await freePort()}`, LOG_LEVEL: 'info' });
  await waitFor(() => cli.stdout.some((l) => l.includes('worker started')), 30_000, 'the worker started');
  const started = Date.now();
  cli.child.kill('SIGTERM');
  assert.equal(await cli.exited, 0);
  assert.ok(Date.now() - started < 5000, `stopped in ${Date.now() - started} ms (SHUTDOWN_TIMEOUT_MS is 10 s)`);
});

test('log lines are readable on a terminal and JSON otherwise', async () => {
  const env = { ...process.env, REDIS_URL: `redis://127.0.0.1:${await freePort()}`, LOG_LEVEL: 'info' };
  // `script` (util-linux) gives the process a pseudo-terminal as stdout.
  const command = `${process.execPath} --import tsx src/cli.ts work`;
  const tty = await outputUntil('script', ['-qec', command, '/dev/null'], env, /worker started/);
  assert.match(tty, /INFO.*worker started/);
  assert.doesNotMatch(tty, /^\{"level"/m);
  const piped = await outputUntil(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'work'], env, /worker started/);
  const started = piped
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .find((l) => l.msg === 'worker started');
  assert.equal(started?.level, 30);
});

test('a service whose terminal closes stops by itself (regression: it looped on the dead terminal, using a core)', async () => {
  const env = { ...process.env, REDIS_URL: `redis://127.0.0.1:${await freePort()}`, LOG_LEVEL: 'info' };
  const command = `${process.execPath} --import tsx src/cli.ts work`;
  const terminal = spawn('script', ['-qec', command, '/dev/null'], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let text = '';
  terminal.stdout.on('data', (chunk: Buffer) => {
    text += chunk.toString('utf8');
  });
  await waitFor(() => text.includes('worker started'), 60_000, 'the worker started');
  const pid = Number(/\((\d+)\)/.exec(stripVTControlCharacters(text))?.[1]);
  assert.ok(pid > 0, 'the service logged its pid');
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  terminal.kill('SIGKILL'); // the terminal goes away: the service gets SIGHUP
  try {
    await waitFor(() => !alive(), 20_000, 'the service to stop');
  } finally {
    if (alive()) process.kill(pid, 'SIGKILL');
  }
});
