/**
 * The spool from the operator's side, with real processes: a listener killed (kill -9) under load and restarted on
 * the same SPOOL_DIR loses nothing; `spool status` and `spool drain`; a SPOOL_DIR that cannot be used stops the start
 * with a clear error.
 */

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import { newDeliveryId } from '../../src/queue/contract.ts';
import { Spool } from '../../src/spool/spool.ts';
import { runCli, spawnCli } from '../helpers/cli.ts';
import { runDispatch } from '../helpers/dispatch.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { post, startTestListener, untilReady } from '../helpers/listener.ts';
import { assertOneJobPerDelivery, steadyLoad } from '../helpers/load.ts';
import { freePort, startRedis } from '../helpers/redis-server.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, recordBody, startTestWorker } from '../helpers/worker.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

const tempDir = useTempDirs('spool-cli-');

const fail = (message: string): never => assert.fail(message);

async function readyz(base: string): Promise<{ ok: boolean; spool: { depth: number } } | null> {
  try {
    return (await (await fetch(`${base}/readyz`)).json()) as { ok: boolean; spool: { depth: number } };
  } catch {
    return null;
  }
}

test('a listener killed (kill -9) under load and restarted on the same SPOOL_DIR: every 200 is one job', async (t) => {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const spoolDir = tempDir();
  const port = await freePort();
  const env = { PORT: String(port), HOST: '127.0.0.1', REDIS_URL: redis.url, QUEUE_NAME: 'crash', SPOOL_DIR: spoolDir };
  const base = `http://127.0.0.1:${port}`;
  const first = spawnCli(['listen'], env);
  cleanup.push(async () => {
    first.child.kill('SIGKILL');
  });
  await waitFor(async () => (await readyz(base))?.ok === true, 20_000, 'the listener to be ready');

  const rate = 200;
  const answers = await steadyLoad(base, rate * 3, rate, {
    tag: 'crash',
    timeoutMs: 3000,
    onSent: (i) => {
      if (i === rate) redis.freeze();
      if (i === rate * 2) first.child.kill('SIGKILL');
    },
  });
  await first.exited;
  redis.thaw();
  const ok = answers.filter((a) => a.status === 200).length;
  t.diagnostic(`answered 200: ${ok}; no answer (killed): ${answers.filter((a) => a.status === 0).length}`);
  // Nearly all deliveries sent before the kill were answered (those in flight at that instant were not).
  assert.ok(ok >= rate * 2 - 50, `${ok} deliveries answered before the kill`);
  assert.equal(answers.filter((a) => a.status !== 200 && a.status !== 0).length, 0);

  const status = await runDispatch(['spool', 'status', '--json'], { SPOOL_DIR: spoolDir });
  assert.equal(status.status, 0, status.stderr);
  const left = JSON.parse(status.stdout) as { depth: number };
  assert.ok(left.depth > 0, 'the killed listener left deliveries in the spool');

  const second = spawnCli(['listen'], env);
  cleanup.push(async () => {
    second.child.kill('SIGTERM');
    await second.exited;
  });
  await waitFor(async () => (await readyz(base))?.spool.depth === 0, 20_000, 'the restarted listener to drain');
  const queue = new Queue('crash', { connection: { url: redis.url } });
  try {
    const jobs = await assertOneJobPerDelivery(queue, answers, fail);
    t.diagnostic(`jobs: ${jobs}; left in the spool by the killed listener: ${left.depth}`);
  } finally {
    await queue.close();
  }
});

test('spool status and spool drain: an operator empties a spool left behind, once, into the queue', async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const spoolDir = tempDir();
  const { spool } = await Spool.open({ dir: spoolDir, maxBytes: 1 << 20 });
  for (let i = 0; i < 3; i++) await spool.append(jobFixture(i));
  const env = { SPOOL_DIR: spoolDir, REDIS_URL: redis.url, QUEUE_NAME: 'drain-cli' };

  // While a process holds the directory, drain refuses and names it.
  const refused = await runDispatch(['spool', 'drain'], env);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, new RegExp(`in use by process ${process.pid}`));
  await spool.close();

  const status = await runDispatch(['spool', 'status'], env);
  assert.equal(status.status, 0);
  assert.match(status.stdout, /^deliveries {3}3$/m);
  assert.match(status.stdout, /^oldest {7}2026-01-01T00:00:00.000Z/m);

  // On a terminal, a progress line rewritten after each batch, then the summary.
  const drained = await runDispatch(['spool', 'drain'], env, { isTTY: true });
  assert.equal(drained.status, 0, drained.stderr);
  assert.match(drained.stdout, /\rmoved 3 of 3\nmoved 3 deliveries to queue drain-cli\n$/);
  const queue = new Queue('drain-cli', { connection: { url: redis.url } });
  try {
    const ids = (await queue.getJobs(['waiting'])).map((job) => job.id).sort();
    assert.deepEqual(
      ids,
      [0, 1, 2].map((i) => jobFixture(i).data.deliveryId),
    );
  } finally {
    await queue.close();
  }
  assert.match((await runDispatch(['spool', 'status'], env)).stdout, /^deliveries {3}0$/m);
});

test("spool drain: a spooled delivery the queue folds as a duplicate makes its record run again (RECORD_ORDER=latest), as the listener's drain does", async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const listener = await startTestListener(redis.url);
  cleanup.push(() => listener.close());
  await untilReady(listener);
  const runs: string[] = [];
  const worker = await startTestWorker(
    listener,
    { RECORD_ORDER: 'latest' },
    {
      'invoice.*': async (_event, ctx) => {
        runs.push(ctx.deliveryId);
      },
    },
  );
  cleanup.push(() => worker.close());
  const first = (await post(listener.url, recordBody('CLI-F1', 1), json)).body;
  await waitFor(() => runs.includes(first.deliveryId as string), 10_000, 'the record ran');
  const queued = await listener.queue.getJob(first.jobId as string);
  assert.ok(queued);
  // The same bytes received again while Redis was away: spooled, then found a duplicate when drained.
  const folded = { ...queued.data, deliveryId: newDeliveryId(), receivedAt: new Date().toISOString() };
  const spoolDir = tempDir();
  const { spool } = await Spool.open({ dir: spoolDir, maxBytes: 1 << 20 });
  await spool.append({ name: queued.name, data: folded });
  await spool.close();

  const drain = await runDispatch(['spool', 'drain'], {
    SPOOL_DIR: spoolDir,
    REDIS_URL: redis.url,
    QUEUE_NAME: listener.config.queueName,
  });
  assert.equal(drain.status, 0, drain.stderr);
  assert.match(drain.stdout, new RegExp(`^moved 1 deliveries to queue ${listener.config.queueName}$`, 'm'));
  assert.ok(!drain.stdout.includes('\r'), 'off a terminal, no progress line');
  await waitFor(() => runs.includes(folded.deliveryId), 10_000, 'the record ran again');
  assert.deepEqual(runs, [first.deliveryId, folded.deliveryId]);
});

test('a SPOOL_DIR that cannot be created stops the start with a clear error naming it', async () => {
  const dir = tempDir();
  const file = join(dir, 'a-file');
  await writeFile(file, 'not a directory');
  const result = runCli(['listen'], { SPOOL_DIR: join(file, 'spool'), PORT: '0', HOST: '127.0.0.1' });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /SPOOL_DIR .*a-file\/spool cannot be created: ENOTDIR/);
});
