/**
 * The README's quick start, run as written: `npm start` serves, the curl example makes one job, and CI runs the
 * README's test command.
 */

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
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
after(async () => {
  await redis?.destroy();
});

test('the quick start is two commands: one runs the service, one runs the tests, and CI runs the latter', () => {
  assert.deepEqual(commands, ['npm ci && npm start', 'npm ci && npm test']);
  const ci = readFileSync(join(ROOT, '.ci/run'), 'utf8');
  assert.match(ci, /^npm ci && npm test$/m);
});

test('npm start serves the README curl example, which makes one invoice.paid job', async () => {
  assert.ok(existsSync(join(ROOT, 'dist/src/cli.js')), 'dist/ is built (npm test builds it first)');
  redis = await startRedis();
  const port = await freePort();
  const service = spawn('npm', ['start', '--silent'], {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      REDIS_URL: redis.url,
      LOG_LEVEL: 'warn',
      SPOOL_DIR: tempSpoolDir(),
    },
    stdio: 'ignore',
    detached: true,
  });
  try {
    await waitFor(() => httpOk(`http://127.0.0.1:${port}/readyz`), 20_000, 'npm start to be ready');
    const curl = readme
      .split('\n')
      .find((line) => line.startsWith('curl -X POST http://localhost:3000/webhook/sellsy'));
    assert.ok(curl, 'the README has the curl example');
    const output = execFileSync('sh', ['-c', curl.replace('localhost:3000', `127.0.0.1:${port}`)], {
      encoding: 'utf8',
    });
    const answer = JSON.parse(output) as { ok: boolean; jobId: string };
    assert.equal(answer.ok, true);
    const queue = new Queue('sellsy-webhooks', { connection: { url: redis.url } });
    try {
      // `npm start` runs the worker too: the job is waiting, active or already completed.
      const job = await queue.getJob(answer.jobId);
      assert.equal(job?.name, 'invoice.paid');
      assert.equal(job?.data.rawBody, '{"event":"invoice.paid","data":{"id":123,"customer":"Acme Corp"}}');
    } finally {
      await queue.close();
    }
  } finally {
    if (service.pid) process.kill(-service.pid, 'SIGTERM');
  }
});
