/**
 * The last resort, on a real file system: a disk that fills up or turns read-only under the spool. A small tmpfs
 * mounted for the test plays the disk (mounting needs root; without it the test is skipped and says so).
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, type TestContext, test } from 'node:test';
import { runCli } from '../helpers/cli.ts';
import { post, startTestListener, untilReady } from '../helpers/listener.ts';
import { allJobs } from '../helpers/load.ts';
import { freePort, RedisServer } from '../helpers/redis-server.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});
// Removed after the hook above has unmounted the file systems.
const tempDir = useTempDirs('spool-disk-');

function mount(args: string[]): boolean {
  const result = spawnSync('mount', args, { encoding: 'utf8' });
  if (result.status !== 0) console.error('mount', args.join(' '), result.stderr);
  return result.status === 0;
}

/** A tmpfs with these mount options on a fresh directory, unmounted after the file; null (test skipped) if not root. */
async function tmpfs(t: TestContext, options: string): Promise<string | null> {
  const dir = tempDir();
  if (!mount(['-t', 'tmpfs', '-o', options, 'tmpfs', dir])) {
    t.skip('mounting a tmpfs (a real small or read-only disk) needs root; run the tests as root to cover this');
    return null;
  }
  cleanup.push(async () => {
    spawnSync('umount', ['-l', dir]);
  });
  return dir;
}

test('a full or read-only disk under the spool: deliveries get the last-resort answer, the process stays up, and it recovers', async (t) => {
  const dir = await tmpfs(t, 'size=64k');
  if (dir === null) return;
  const port = await freePort();
  const l = await startTestListener(`redis://127.0.0.1:${port}`, { SPOOL_DIR: dir });
  cleanup.push(() => l.close());
  const headers = { 'content-type': 'application/json' };
  const body = (i: number) => `{"relatedtype":"a","event":"b","relatedid":"${i}","pad":"${'x'.repeat(4000)}"}`;

  const spooled: string[] = [];
  let lost: Awaited<ReturnType<typeof post>> | null = null;
  for (let i = 0; i < 40 && lost === null; i++) {
    const answer = await post(l.url, body(i), headers);
    assert.equal(answer.status, 200);
    if (answer.body.spooled === true) spooled.push(answer.body.jobId as string);
    else lost = answer;
  }
  assert.ok(lost, 'the disk filled up');
  assert.equal(lost.body.queued, false);
  assert.ok(spooled.length > 3, `${spooled.length} deliveries spooled before the disk was full`);
  const line = l.logs.find((entry) => entry.msg === 'delivery not queued');
  assert.equal(line?.reason, 'spool_error');
  assert.match(String(line?.err), /ENOSPC/);
  assert.equal((await fetch(`${l.url}/healthz`)).status, 200, 'the process is up');
  assert.equal((await fetch(`${l.url}/readyz`)).status, 503, 'not ready: neither Redis nor the spool can take one');
  assert.equal(l.spooling?.spool.status().depth, spooled.length, 'the failed write left no record behind');

  assert.ok(mount(['-o', 'remount,size=1m', dir]));
  const afterSpace = await post(l.url, body(100), headers);
  assert.equal(afterSpace.body.spooled, true, 'space is back: the spool takes deliveries again');
  spooled.push(afterSpace.body.jobId as string);

  // Redis back: the spool drains and closes its files; then Redis goes away and the disk turns read-only.
  const redis = new RedisServer(port, ['--appendonly', 'yes']);
  cleanup.push(() => redis.destroy());
  await redis.start();
  await untilReady(l);
  await l.spooling?.drained(20_000);
  await redis.kill();
  assert.ok(mount(['-o', 'remount,ro', dir]));
  const readOnly = await post(l.url, body(101), headers);
  assert.equal(readOnly.body.queued, false);
  assert.match(String(l.logs.findLast((entry) => entry.msg === 'delivery not queued')?.err), /EROFS/);
  assert.ok(mount(['-o', 'remount,rw', dir]));
  const writable = await post(l.url, body(102), headers);
  assert.equal(writable.body.spooled, true);
  spooled.push(writable.body.jobId as string);

  await redis.start();
  await untilReady(l);
  await l.spooling?.drained(20_000);
  const ids = (await allJobs(l.queue)).map((job) => job.id).sort();
  assert.deepEqual(ids, spooled.sort(), 'every spooled delivery is one job, nothing else');
});

test('a SPOOL_DIR on a read-only file system stops the start with a clear error', async (t) => {
  const dir = await tmpfs(t, 'size=64k,ro');
  if (dir === null) return;
  const result = runCli(['listen'], { SPOOL_DIR: dir, PORT: '0', HOST: '127.0.0.1' });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /SPOOL_DIR .* is not writable: EROFS/);
});
