/**
 * The spool on real files: durability across reopen, group commit, oldest-first drain, torn and damaged records,
 * the size bound and the directory lock.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { constants } from 'node:fs';
import { appendFile, readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { SpoolError, SpoolLockedError } from '../../src/errors.ts';
import type { WebhookJob } from '../../src/queue/contract.ts';
import { DRAIN_BATCH_BYTES } from '../../src/spool/drain-batches.ts';
import { ENTRY_HEADER_BYTES, encodeEntry } from '../../src/spool/format.ts';
import { inspectSpool } from '../../src/spool/recovery.ts';
import { Spool } from '../../src/spool/spool.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';

const tempDir = useTempDirs('spool-test-');

async function drainAll(spool: Spool): Promise<WebhookJob[]> {
  const seen: WebhookJob[] = [];
  await spool.drain(async (jobs) => {
    seen.push(...jobs);
  });
  return seen;
}

const segmentFiles = async (dir: string) => (await readdir(dir)).filter((f) => f.startsWith('segment-')).sort();

/** A spool directory left by a closed spool that held deliveries 0 … n-1, in one segment file. */
async function closedSpoolOf(n: number): Promise<{ dir: string; file: string; path: string }> {
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20 });
  for (let i = 0; i < n; i++) await spool.append(jobFixture(i));
  await spool.close();
  const [file = ''] = await segmentFiles(dir);
  return { dir, file, path: join(dir, file) };
}

test('appended deliveries survive a reopen and drain oldest first, byte-exact, then their files are removed', async () => {
  const dir = tempDir();
  const first = await Spool.open({ dir, maxBytes: 1 << 20 });
  for (let i = 0; i < 5; i++) await first.spool.append(jobFixture(i));
  assert.equal(first.spool.status().depth, 5);
  await first.spool.close();

  const held = await segmentFiles(dir);
  const { spool, recovery } = await Spool.open({ dir, maxBytes: 1 << 20 });
  assert.equal(recovery.depth, 5);
  assert.equal(spool.status().oldestReceivedAt, jobFixture(0).data.receivedAt);
  const drained = await drainAll(spool);
  assert.deepEqual(
    drained,
    [0, 1, 2, 3, 4].map((i) => jobFixture(i)),
  );
  assert.equal(spool.status().depth, 0);
  const left = await segmentFiles(dir);
  assert.ok(held.length > 0 && held.every((file) => !left.includes(file)), 'the drained segments are deleted');
  await spool.close();
  assert.deepEqual(await readdir(dir), [], 'the lock is released too');
});

test('concurrent appends share one write and one fsync (group commit)', async () => {
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 24 });
  await Promise.all(Array.from({ length: 200 }, (_, i) => spool.append(jobFixture(i))));
  const { depth, writes } = spool.status();
  assert.equal(depth, 200);
  assert.ok(writes <= 2, `200 appends of one turn took ${writes} writes`);
  await spool.close();
});

test('a torn record at the end (a crash during an append) is cut off on open, never replayed', async () => {
  const { dir, path } = await closedSpoolOf(3);
  const sizeBefore = (await readFile(path)).length;
  const torn = encodeEntry(jobFixture(3));
  await appendFile(path, torn.subarray(0, torn.length - 7));

  const { spool, recovery } = await Spool.open({ dir, maxBytes: 1 << 20 });
  assert.equal(recovery.depth, 3);
  assert.equal(recovery.tornBytes, torn.length - 7);
  assert.equal(recovery.corruptBytes, 0);
  assert.equal((await readFile(path)).length, sizeBefore, 'the segment is truncated to its last good record');
  assert.deepEqual(
    (await drainAll(spool)).map((j) => j.data.deliveryId),
    [0, 1, 2].map((i) => jobFixture(i).data.deliveryId),
  );
  await spool.close();
});

test('a damaged record in the middle is skipped, the others drain, and the segment is kept as .corrupt', async () => {
  const { dir, file, path } = await closedSpoolOf(3);
  const bytes = await readFile(path);
  const second = bytes.indexOf(Buffer.from('"dedupKey":"key-1"'));
  assert.ok(second > 0);
  bytes[second + 16] = '7'.charCodeAt(0);
  await writeFile(path, bytes);

  const { spool, recovery } = await Spool.open({ dir, maxBytes: 1 << 20 });
  assert.equal(recovery.depth, 2);
  assert.ok(recovery.corruptBytes > ENTRY_HEADER_BYTES);
  const drained = await drainAll(spool);
  assert.deepEqual(
    drained.map((j) => j.data.deliveryId),
    [0, 2].map((i) => jobFixture(i).data.deliveryId),
  );
  await spool.close();
  assert.deepEqual(await readdir(dir), [file.replace('.log', '.corrupt')]);
});

test('a drain stopped by a failing sink keeps what was not confirmed, across a reopen', async () => {
  const dir = tempDir();
  const first = await Spool.open({ dir, maxBytes: 1 << 20 });
  await Promise.all(Array.from({ length: 10 }, (_, i) => first.spool.append(jobFixture(i))));
  let calls = 0;
  await assert.rejects(
    first.spool.drain(
      async () => {
        if (++calls === 2) throw new Error('Redis went away');
      },
      { limits: () => ({ entries: 4, bytes: DRAIN_BATCH_BYTES }) },
    ),
    /Redis went away/,
  );
  assert.equal(first.spool.status().depth, 6);
  await first.spool.close();

  const { spool, recovery } = await Spool.open({ dir, maxBytes: 1 << 20 });
  assert.equal(recovery.depth, 6);
  assert.deepEqual(
    (await drainAll(spool)).map((j) => j.data.deliveryId),
    [4, 5, 6, 7, 8, 9].map((i) => jobFixture(i).data.deliveryId),
  );
  await spool.close();
});

test('appends made while a drain runs are kept for the next drain, not lost', async () => {
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20 });
  await spool.append(jobFixture(0));
  const seen: string[] = [];
  await spool.drain(async (jobs) => {
    seen.push(...jobs.map((j) => j.data.deliveryId));
    await spool.append(jobFixture(1));
  });
  assert.equal(spool.status().depth, 1);
  seen.push(...(await drainAll(spool)).map((j) => j.data.deliveryId));
  assert.deepEqual(
    seen,
    [0, 1].map((i) => jobFixture(i).data.deliveryId),
  );
  await spool.close();
});

test('past SPOOL_MAX_BYTES appends fail with SpoolError("full") and the spool reports itself unhealthy', async () => {
  const dir = tempDir();
  const record = encodeEntry(jobFixture(0)).length;
  const { spool } = await Spool.open({ dir, maxBytes: 8 + record * 2 });
  await spool.append(jobFixture(0));
  await spool.append(jobFixture(1));
  await assert.rejects(
    spool.append(jobFixture(2)),
    (err: SpoolError) => err instanceof SpoolError && err.reason === 'full',
  );
  assert.equal(spool.status().healthy, false);
  await drainAll(spool);
  assert.equal(spool.status().healthy, true);
  await spool.append(jobFixture(2));
  await spool.close();
});

test('a second open of a held SPOOL_DIR is refused with a clear error naming the holder', async () => {
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20 });
  await assert.rejects(
    Spool.open({ dir, maxBytes: 1 << 20 }),
    (err: Error) =>
      err instanceof SpoolLockedError &&
      err.message.includes(`process ${process.pid} on host ${hostname()}`) &&
      err.message.includes(dir),
  );
  await spool.close();
});

test('a LOCK left by an earlier version (pid and host name, never refreshed) is taken over after the stale delay', async () => {
  const dir = tempDir();
  const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const lock = { pid: Number(gone.stdout), hostname: 'another-host', since: new Date().toISOString() };
  await writeFile(join(dir, 'LOCK'), JSON.stringify(lock));
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20, lockStaleMs: 1000 });
  const holder = JSON.parse(await readFile(join(dir, 'LOCK'), 'utf8'));
  assert.equal(holder.pid, process.pid);
  assert.equal(holder.hostname, hostname());
  await spool.close();
});

test('spool status reads the files without the lock and without changing them', async () => {
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20 });
  await spool.append(jobFixture(0));
  await spool.append(jobFixture(1));
  const files = async () =>
    Promise.all((await readdir(dir)).sort().map(async (f) => [f, (await readFile(join(dir, f))).toString('base64')]));
  const before = await files();
  const status = await inspectSpool(dir, 1 << 20);
  assert.equal(status.depth, 2);
  assert.equal(status.oldestReceivedAt, jobFixture(0).data.receivedAt);
  assert.equal(status.bytes, spool.status().bytes);
  assert.deepEqual(await files(), before, "no file was changed, added or removed (the lock stays the owner's)");
  await spool.close();
});

test('the segment being appended to is open with O_DSYNC: each group commit is durable when its write returns', async (t) => {
  if (process.platform !== 'linux') {
    t.skip('reads the open file flags from /proc (Linux only)');
    return;
  }
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20 });
  try {
    await spool.append(jobFixture(1));
    const segments = (await readdir(dir)).filter((name) => /^segment-\d+\.log$/.test(name)).map((n) => join(dir, n));
    const flags: number[] = [];
    for (const fd of await readdir('/proc/self/fd')) {
      const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
      if (!segments.includes(target)) continue;
      const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8').catch(() => '');
      const octal = /^flags:\s*([0-7]+)$/m.exec(info)?.[1];
      if (octal) flags.push(Number.parseInt(octal, 8));
    }
    assert.ok(flags.length > 0, 'the spool holds its active segment open');
    for (const f of flags) assert.equal(f & constants.O_DSYNC, constants.O_DSYNC);
  } finally {
    await spool.close();
  }
});
