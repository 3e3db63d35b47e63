/**
 * The spool directory lock with real separate processes: containers where every listener is PID 1 under one host
 * name, a holder killed with `kill -9` from another host name, a listener whose directory was taken from under it,
 * and the files' modes. Pid and UTS namespaces need root (`unshare`); without it those tests are skipped.
 */

import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, type TestContext, test } from 'node:test';
import { Spool } from '../../src/spool/spool.ts';
import { ROOT } from '../helpers/cli.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { post, startTestListener } from '../helpers/listener.ts';
import { freePort, startRedis } from '../helpers/redis-server.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

const tempDir = useTempDirs('spool-lock-');

interface HolderLine {
  held: boolean;
  pid: number;
  hostname: string;
  code?: string;
  message?: string;
  recovered?: number;
}

interface Holder {
  child: ChildProcess;
  /** The holder's first line: whether it got the directory. */
  line: Promise<HolderLine>;
  exited: Promise<void>;
}

const canUnshare = () => spawnSync('unshare', ['--pid', '--fork', '--uts', '--mount-proc', 'true']).status === 0;

/**
 * test/spool/spool-holder.ts on `dir`, as PID 1 of its own pid namespace with host name `name` (a container), or as
 * a plain process when `name` is null.
 */
function startHolder(dir: string, name: string | null): Holder {
  const node = [process.execPath, '--import', 'tsx', 'test/spool/spool-holder.ts'];
  const child =
    name === null
      ? spawn(node[0] as string, node.slice(1), { cwd: ROOT, env: { ...process.env, SPOOL_DIR: dir } })
      : spawn(
          'unshare',
          [
            '--pid',
            '--fork',
            '--kill-child',
            '--uts',
            '--mount-proc',
            'sh',
            '-c',
            `hostname ${name}; exec "$@"`,
            'sh',
          ].concat(node),
          { cwd: ROOT, env: { ...process.env, SPOOL_DIR: dir } },
        );
  child.stderr?.on('data', (chunk: Buffer) => process.stderr.write(chunk));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const line = new Promise<HolderLine>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
      const end = out.indexOf('\n');
      if (end !== -1) resolve(JSON.parse(out.slice(0, end)) as HolderLine);
    });
    void exited.then(() => reject(new Error(`the holder exited without a word: ${out}`)));
  });
  cleanup.push(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  return { child, line, exited };
}

/** The node process under `unshare … sh -c 'exec node …'` (the holder itself, PID 1 inside). */
async function holderPid(holder: Holder): Promise<number> {
  const pid = holder.child.pid as number;
  const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/);
  assert.equal(children.length, 1);
  return Number(children[0]);
}

function skipUnlessUnshare(t: TestContext): boolean {
  if (canUnshare()) return false;
  t.skip('pid and UTS namespaces (unshare) need root; run the tests as root to cover this');
  return true;
}

test('two containers that are each PID 1 with the same host name: the second is refused while the first lives', async (t) => {
  if (skipUnlessUnshare(t)) return;
  const dir = tempDir();
  const first = startHolder(dir, 'sellsy-webhooks');
  const held = await first.line;
  assert.deepEqual([held.held, held.pid, held.hostname], [true, 1, 'sellsy-webhooks']);
  const lockBefore = await readFile(join(dir, 'LOCK'), 'utf8');

  const second = startHolder(dir, 'sellsy-webhooks');
  const refused = await second.line;
  assert.equal(refused.pid, 1, 'the second is PID 1 too');
  assert.equal(refused.held, false, 'the second process took the live holder’s lock');
  assert.equal(refused.code, 'SW_ERR_SPOOL_LOCKED');
  assert.match(refused.message ?? '', /in use by process 1 on host sellsy-webhooks/);
  assert.equal(await readFile(join(dir, 'LOCK'), 'utf8'), lockBefore, 'the lock is still the first one’s');
  assert.equal(first.child.exitCode, null, 'the first still runs');
});

test('spool drain run in a second container (PID 1, same host name) beside a live listener is refused, naming it', async (t) => {
  if (skipUnlessUnshare(t)) return;
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const dir = tempDir();
  const holder = startHolder(dir, 'sellsy-webhooks');
  assert.equal((await holder.line).held, true);
  const segments = (await readdir(dir)).filter((f) => f.endsWith('.log'));

  const drain = spawnSync(
    'unshare',
    [
      '--pid',
      '--fork',
      '--kill-child',
      '--uts',
      '--mount-proc',
      'sh',
      '-c',
      'hostname sellsy-webhooks; exec "$@"',
      'sh',
    ].concat([process.execPath, '--import', 'tsx', 'src/cli.ts', 'spool', 'drain']),
    { cwd: ROOT, env: { ...process.env, SPOOL_DIR: dir, REDIS_URL: redis.url }, encoding: 'utf8', timeout: 60_000 },
  );
  assert.equal(drain.status, 1, drain.stdout);
  assert.match(drain.stderr, /in use by process 1 on host sellsy-webhooks/);
  assert.deepEqual(
    (await readdir(dir)).filter((f) => f.endsWith('.log')),
    segments,
    'the listener’s segments are still there',
  );
});

test('a holder killed with kill -9 is taken over by a process with another host name, no file deleted by hand', async (t) => {
  if (skipUnlessUnshare(t)) return;
  const dir = tempDir();
  const first = startHolder(dir, 'pod-a');
  assert.equal((await first.line).held, true);
  process.kill(await holderPid(first), 'SIGKILL');
  await first.exited;
  assert.ok((await readdir(dir)).includes('LOCK'), 'kill -9 left its LOCK behind');

  // Within the documented stale delay (10 s) after the last heartbeat: the new holder waits for it, then takes over.
  const second = startHolder(dir, 'pod-b');
  const taken = await second.line;
  assert.equal(taken.held, true, `refused: ${taken.message}`);
  assert.equal(taken.recovered, 1, 'the new holder found the delivery the killed one had spooled');
  assert.match(await readFile(join(dir, 'LOCK'), 'utf8'), /"hostname":"pod-b"/);
});

/** A listener with Redis down (every delivery goes to the spool) on its own SPOOL_DIR. */
async function spoolingListener() {
  const dir = tempDir();
  const l = await startTestListener(`redis://127.0.0.1:${await freePort()}`, { SPOOL_DIR: dir });
  cleanup.push(() => l.close());
  const deliver = (i: number) =>
    post(l.url, `{"relatedtype":"a","event":"b","relatedid":"${i}"}`, { 'content-type': 'application/json' });
  const first = await deliver(0);
  assert.equal(first.body.spooled, true, 'Redis is down: the delivery is spooled');
  return { l, dir, deliver };
}

async function assertStoppedSpooling(
  l: Awaited<ReturnType<typeof startTestListener>>,
  answer: Awaited<ReturnType<typeof post>>,
) {
  assert.equal(answer.status, 200);
  assert.equal(answer.body.spooled, undefined, 'answered from a spool it no longer owns');
  assert.equal(answer.body.queued, false, 'the last-resort answer');
  assert.equal((await fetch(`${l.url}/readyz`)).status, 503);
  const lost = l.logs.filter((entry) => entry.msg === 'spool lock lost');
  assert.equal(lost.length, 1, 'one error log line');
  assert.equal(lost[0]?.level, 50);
  assert.equal(l.logs.findLast((entry) => entry.msg === 'delivery not queued')?.reason, 'spool_error');
}

test('a listener whose spool segment was deleted by another process stops answering from the spool', async () => {
  const { l, dir, deliver } = await spoolingListener();
  const segments = (await readdir(dir)).filter((f) => f.startsWith('segment-'));
  assert.equal(
    spawnSync(
      'rm',
      segments.map((f) => join(dir, f)),
    ).status,
    0,
  );

  await assertStoppedSpooling(l, await deliver(1));
  await assertStoppedSpooling(l, await deliver(2));
});

test('a listener whose LOCK was taken by another process stops answering from the spool', async () => {
  const { l, dir, deliver } = await spoolingListener();
  const other = JSON.stringify({ token: 'other', pid: 1, hostname: 'other', since: new Date().toISOString() });
  const taken = spawnSync('sh', ['-c', `printf '%s' '${other}' > LOCK.new && mv LOCK.new LOCK`], { cwd: dir });
  assert.equal(taken.status, 0);

  await assertStoppedSpooling(l, await deliver(1));
  assert.equal(JSON.parse(await readFile(join(dir, 'LOCK'), 'utf8')).token, 'other', 'the new holder keeps its lock');
  await l.spooling?.spool.close();
  assert.ok((await readdir(dir)).includes('LOCK'), 'closing the spool did not remove the new holder’s lock');
});

/** Blocks this process's event loop for `ms` (a stalled listener: no heartbeat runs meanwhile). */
function blockEventLoop(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // busy
  }
}

test('a heartbeat late past the stale delay keeps a LOCK nobody took: the spool still acknowledges, and the heartbeat moves again', async () => {
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20, lockStaleMs: 200 });
  cleanup.push(() => spool.close());
  await spool.append(jobFixture(0));
  const before = await stat(join(dir, 'LOCK'));
  blockEventLoop(400);
  await spool.append(jobFixture(1));
  assert.equal(spool.status().healthy, true, spool.status().lastError ?? '');
  assert.equal(spool.status().depth, 2);
  const after = await stat(join(dir, 'LOCK'));
  assert.equal(after.ino, before.ino, 'the same LOCK');
  assert.ok(after.mtimeMs > before.mtimeMs, 'its heartbeat was refreshed');
});

test('a heartbeat late past the stale delay while another process took the LOCK over: the lock is lost', async () => {
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20, lockStaleMs: 200 });
  cleanup.push(() => spool.close());
  await spool.append(jobFixture(0));
  const other = JSON.stringify({ token: 'other', pid: 1, hostname: 'other', since: new Date().toISOString() });
  // spawnSync blocks the event loop too: the heartbeat is late when the takeover is seen.
  const taken = spawnSync('sh', ['-c', `sleep 0.4; printf '%s' '${other}' > LOCK.new && mv LOCK.new LOCK`], {
    cwd: dir,
  });
  assert.equal(taken.status, 0);
  await assert.rejects(spool.append(jobFixture(1)), { reason: 'lock_lost' });
  assert.equal(spool.status().healthy, false);
  assert.equal(JSON.parse(await readFile(join(dir, 'LOCK'), 'utf8')).token, 'other', 'the new holder keeps its lock');
});

const modeOf = async (path: string) => (await stat(path)).mode & 0o777;

test('spool files are created 0600 in a 0700 directory (they hold whole bodies and signature headers)', async () => {
  const dir = join(tempDir(), 'spool');
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20 });
  await spool.append(jobFixture(0));
  assert.equal(await modeOf(dir), 0o700);
  const files = await readdir(dir);
  assert.ok(files.includes('LOCK') && files.some((f) => f.endsWith('.log')));
  for (const f of files) assert.equal(await modeOf(join(dir, f)), 0o600, f);
  await spool.close();
});

test('a spool directory left with looser modes by an earlier version is tightened at open', async () => {
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20 });
  for (let i = 0; i < 2; i++) await spool.append(jobFixture(i));
  await spool.close();
  const [segment = ''] = (await readdir(dir)).filter((f) => f.endsWith('.log'));
  await writeFile(join(dir, segment.replace('.log', '.done')), '0', { mode: 0o644 });
  await writeFile(join(dir, 'segment-0000000000000000.corrupt'), 'x', { mode: 0o644 });
  await chmod(join(dir, segment), 0o644);
  await chmod(dir, 0o755);

  const reopened = await Spool.open({ dir, maxBytes: 1 << 20 });
  cleanup.push(() => reopened.spool.close());
  assert.equal(await modeOf(dir), 0o700);
  for (const f of await readdir(dir)) assert.equal(await modeOf(join(dir, f)), 0o600, f);
});
