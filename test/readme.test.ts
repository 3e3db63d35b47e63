/**
 * The README run as written: the quick start's two commands (`npm start` serves, CI runs the test command), and the
 * walkthrough, step by step, against `npm start` on a private Redis.
 *
 * The walkthrough's shell blocks are read as a terminal session: a line is a command, the `#` lines under it are
 * what it prints (`…` stands for any text; runs of spaces count as one). `npm start` (with its variables) and
 * `redis-cli MONITOR` are run by the test in the background, as the reader runs them in other terminals; a line that
 * only sets a shell variable is kept for the commands after it. A `text` block is an excerpt of what MONITOR shows.
 * Between commands the test waits for the worker to have taken every job, as a reader typing would. The machine
 * running the tests is shared and busy: a generous ACK_BUDGET_MS keeps the answers from Redis, as the README shows
 * them, rather than from the spool (`"spooled":true`), which the README mentions.
 */

import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import { loadConfig } from '../src/config/config.ts';
import { httpOk, ROOT, tempSpoolDir } from './helpers/cli.ts';
import { freePort, type RedisServer, startRedis } from './helpers/redis-server.ts';
import { waitFor } from './helpers/wait.ts';

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const quickStart = /## Quick start[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
const commands = quickStart
  .split('\n')
  .map((line) => line.replace(/#.*$/, '').trim())
  .filter(Boolean);

let redis: RedisServer | undefined;
const background: ChildProcess[] = [];
after(async () => {
  await Promise.all(background.map(stop));
  await redis?.destroy();
});

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return Promise.resolve();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    return Promise.resolve();
  }
  return exited;
}

test('the quick start is two commands: one runs the service, one runs the tests, and CI runs the latter', () => {
  assert.deepEqual(commands, ['npm ci && npm start', 'npm ci && npm test']);
  const ci = readFileSync(join(ROOT, '.ci/run'), 'utf8');
  assert.match(ci, /^npm ci && npm test$/m);
});

type Step = { kind: 'command'; command: string; expected: string[] } | { kind: 'monitor-excerpt'; lines: string[] };

/** The walkthrough's blocks, in order: commands with the output shown under them, and MONITOR excerpts. */
function walkthroughSteps(): Step[] {
  const start = readme.indexOf('## Walkthrough');
  assert.ok(start >= 0, 'the README has a walkthrough');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const steps: Step[] = [];
  for (const [, lang, body] of section.matchAll(/```(\w+)\n([\s\S]*?)```/g)) {
    const lines = (body ?? '').split('\n').filter((line) => line.trim() !== '');
    if (lang === 'text') {
      steps.push({ kind: 'monitor-excerpt', lines });
      continue;
    }
    assert.equal(lang, 'sh', 'walkthrough blocks are sh sessions or text excerpts');
    for (const line of lines) {
      const last = steps.at(-1);
      if (line.startsWith('#')) {
        assert.ok(last?.kind === 'command', `output "${line}" follows a command`);
        last.expected.push(line.replace(/^# ?/, ''));
      } else {
        steps.push({ kind: 'command', command: line.replace(/\s+#\s.*$/, '').trim(), expected: [] });
      }
    }
  }
  return steps;
}

/** `…` is any text; runs of spaces count as one. */
function pattern(shown: string, anchored: boolean): RegExp {
  const escaped = shown
    .trim()
    .replace(/\s+/g, ' ')
    .split('…')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(anchored ? `^${escaped}$` : escaped);
}

function assertShown(output: string, expected: string[], what: string) {
  const lines = output.split('\n').map((line) => line.trim().replace(/\s+/g, ' '));
  let from = 0;
  for (const shown of expected) {
    const re = pattern(shown, true);
    const at = lines.findIndex((line, i) => i >= from && re.test(line));
    assert.ok(at >= 0, `${what} prints "${shown}"; it printed:\n${output}`);
    from = at + 1;
  }
}

test('the walkthrough, run as written, prints what the README shows', async () => {
  assert.ok(existsSync(join(ROOT, 'dist/src/cli.js')), 'dist/ is built (npm test builds it first)');
  redis = await startRedis();
  const port = await freePort();
  const spoolDir = tempSpoolDir();
  const env = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    REDIS_URL: redis.url,
    LOG_LEVEL: 'warn',
    SPOOL_DIR: spoolDir,
    ACK_BUDGET_MS: '2000',
  };
  // The walkthrough runs with the default queue name.
  const queue = new Queue(loadConfig({}).queueName, { connection: { url: redis.url } });
  let service: ChildProcess | undefined;
  let monitor = '';
  let shellVariables = '';
  const outputs: { command: string; output: string }[] = [];
  try {
    for (const step of walkthroughSteps()) {
      if (step.kind === 'monitor-excerpt') {
        const patterns = step.lines.map((line) => pattern(line, false));
        await waitFor(
          () => patterns.every((re) => monitor.split('\n').some((line) => re.test(line))),
          10_000,
          `MONITOR to show:\n${step.lines.join('\n')}\nIt showed:\n${monitor.slice(-4000)}`,
        );
        continue;
      }
      const { command, expected } = step;
      const npmStart = /^((?:[A-Z_]+=\S+\s+)*)npm start$/.exec(command);
      if (npmStart) {
        if (service) await stop(service);
        const variables = Object.fromEntries(
          (npmStart[1] ?? '')
            .trim()
            .split(/\s+/)
            .filter(Boolean)
            .map((assignment) => assignment.split('=') as [string, string]),
        );
        service = spawn('npm', ['start', '--silent'], {
          cwd: ROOT,
          env: { ...env, ...variables },
          stdio: 'ignore',
          detached: true,
        });
        background.push(service);
        await waitFor(() => httpOk(`http://127.0.0.1:${port}/readyz`), 20_000, `${command} to be ready`);
        continue;
      }
      if (command === 'redis-cli MONITOR') {
        const child = spawn('redis-cli', ['-u', redis.url, 'MONITOR'], { detached: true });
        child.stdout.on('data', (chunk: Buffer) => {
          monitor += chunk.toString('utf8');
        });
        background.push(child);
        await waitFor(() => monitor.startsWith('OK'), 5_000, 'MONITOR to start');
        continue;
      }
      if (/^\w+='[^']*'$/.test(command)) {
        assert.deepEqual(expected, [], `${command} prints nothing`);
        shellVariables += `${command}\n`;
        continue;
      }
      // A reader types slower than the worker: the jobs sent so far are done.
      await waitFor(
        async () => (await queue.getJobCountByTypes('waiting', 'active', 'delayed', 'prioritized')) === 0,
        10_000,
        'the worker to take every job',
      );
      const script = shellVariables + command.replaceAll('http://localhost:3000', `http://127.0.0.1:${port}`);
      const run = spawnSync('sh', ['-c', script], { cwd: ROOT, env, encoding: 'utf8', timeout: 30_000 });
      assert.equal(run.status, 0, `${command} exits 0:\n${run.stdout}${run.stderr}`);
      assertShown(run.stdout, expected, command);
      outputs.push({ command, output: run.stdout });
    }

    // The example delivery is one invoice.paid job holding the body exactly as sent.
    const example = outputs.find((o) => o.command.includes('invoice.paid'));
    assert.ok(example, 'the walkthrough sends the example delivery');
    const answer = JSON.parse(example.output) as { ok: boolean; deliveryId: string };
    assert.equal(answer.ok, true);
    // Its job id is its delivery id.
    const job = await queue.getJob(answer.deliveryId);
    assert.equal(job?.name, 'invoice.paid');
    assert.equal(job?.data.rawBody, '{"event":"invoice.paid","data":{"id":123,"customer":"Acme Corp"}}');
    // Sellsy's form format names the job <relatedtype>.<event>.
    const form = outputs.find((o) => o.command.includes('--data-urlencode'));
    assert.ok(form, 'the walkthrough sends a form delivery');
    const formJob = await queue.getJob((JSON.parse(form.output) as { deliveryId: string }).deliveryId);
    assert.equal(formJob?.name, 'invoice.step');
  } finally {
    await queue.close();
    for (const child of background) await stop(child);
  }
});
