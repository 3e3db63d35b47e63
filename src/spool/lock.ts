/**
 * One process per spool directory, whatever its pid, pid namespace or host name: a heartbeat lock.
 *
 * `LOCK` holds the holder's random token, pid, host name, boot id and pid-namespace inode (JSON, mode 0600). It is
 * created with `link()` from a complete temporary file, so it never exists half written, and the holder refreshes
 * its mtime every `HEARTBEAT_MS` (futimes, in libuv's thread pool). Another process:
 * - takes it at once when the holder can be checked directly and is gone: same boot id (same kernel), same pid
 *   namespace, and its pid not running (or its pid is ours: two live processes of one namespace never share a pid);
 * - otherwise watches the heartbeat: refused with `SpoolLockedError` (naming the holder) as soon as it moves, taken
 *   over once it has not moved for `STALE_MS` (the holder was killed, its container or pod is gone). A new container
 *   that is PID 1 again, a pod with a new host name, a host sharing the volume: all are judged by the heartbeat.
 * A takeover replaces `LOCK` with `rename()` under a `LOCK.takeover` directory (mkdir is atomic), after checking
 * that `LOCK` is still the stale one it judged: two contenders never both take it.
 *
 * The holder checks `stillHeld()` (its `LOCK` inode and token still in place) before it acknowledges anything from
 * the spool. A heartbeat late past `STALE_MS` (the event loop or the disk stalled) is judged under the takeover mutex:
 * a `LOCK` still ours is refreshed and kept. A lock lost (`LOCK` replaced or removed) is lost for good: the spool
 * stops taking deliveries. A `LOCK` from an earlier version (pid and host name only, never
 * refreshed) is judged by its mtime like any other: stop the earlier listener before starting this one.
 *
 * Why not `proper-lockfile`: its takeover removes the stale lock then creates a new one, so two contenders that both
 * saw it stale can both end up holding it until the next refresh; and its lock directory names no holder, which an
 * operator needs in the refusal. The takeover here is one atomic rename under a mutex and the file names its holder.
 */
import { randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { link, mkdir, open, readFile, rename, rmdir, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { SpoolLockedError } from '../errors.ts';

const LOCK_FILE = 'LOCK';
/** How often the holder refreshes the lock's mtime. */
const HEARTBEAT_MS = 1_000;
/** A lock whose heartbeat has not moved for this long is taken over (documented in docs/architecture.md, "The spool"). */
const STALE_MS = 10_000;

interface LockHolder {
  token?: string;
  pid: number;
  hostname: string;
  /** `/proc/sys/kernel/random/boot_id`: the same kernel (and boot), whatever the container. */
  bootId?: string | null;
  /** Inode of `/proc/self/ns/pid`: pids can be compared only within one pid namespace. */
  pidNs?: number | null;
  since: string;
}

export interface SpoolLock {
  path: string;
  /**
   * False once the lock was lost: `LOCK` replaced or removed (after a heartbeat late past `STALE_MS`, judged under
   * the takeover mutex; a `LOCK` still ours is refreshed then).
   */
  stillHeld(): Promise<boolean>;
  /** Why the lock was lost, or null. */
  readonly lost: string | null;
  release(): Promise<void>;
}

interface LockOptions {
  /** Default `STALE_MS`; shorter in tests of the takeover. */
  staleMs?: number;
  heartbeatMs?: number;
  /** Called once when the heartbeat finds the lock lost. */
  onLost?: (reason: string) => void;
}

/** After a late heartbeat, how often and how long apart the holder tries the takeover mutex before judging. */
const MUTEX_ATTEMPTS = 20;
const MUTEX_RETRY_MS = 25;

/** Tokens of the locks this process holds: a lock with our pid is stale only if this process did not write it. */
const heldHere = new Set<string>();

interface Observed {
  holder: LockHolder | null;
  raw: string;
  ino: number;
  mtimeMs: number;
}

export async function lockSpoolDir(dir: string, options: LockOptions = {}): Promise<SpoolLock> {
  const staleMs = options.staleMs ?? STALE_MS;
  const heartbeatMs = options.heartbeatMs ?? Math.min(HEARTBEAT_MS, staleMs / 4);
  const path = resolve(dir, LOCK_FILE);
  const me: LockHolder = {
    token: randomBytes(16).toString('hex'),
    pid: process.pid,
    hostname: hostname(),
    bootId: await readFile('/proc/sys/kernel/random/boot_id', 'utf8').then(
      (s) => s.trim(),
      () => null,
    ),
    pidNs: await stat('/proc/self/ns/pid').then(
      (s) => s.ino,
      () => null,
    ),
    since: new Date().toISOString(),
  };
  const tmp = `${path}.${me.token}`;
  const created = await open(tmp, 'wx', 0o600);
  try {
    await created.writeFile(`${JSON.stringify(me)}\n`);
    await created.datasync();
  } finally {
    await created.close();
  }
  try {
    await acquire(dir, path, tmp, me, staleMs);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  // Held open for the heartbeat (futimes) and to know our inode: a takeover renames another file over `LOCK`.
  const handle = await open(path, 'r');
  const ino = (await handle.stat()).ino;
  heldHere.add(me.token as string);
  return new HeldLock(path, handle, ino, me.token as string, staleMs, heartbeatMs, options.onLost);
}

class HeldLock implements SpoolLock {
  lost: string | null = null;
  private lastBeat = Date.now();
  private readonly timer: NodeJS.Timeout;
  private beating: Promise<void> = Promise.resolve();
  private released = false;
  /** The check after a late heartbeat, while one runs. */
  private checkingLate: Promise<string | null> | null = null;

  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly ino: number,
    private readonly token: string,
    private readonly staleMs: number,
    heartbeatMs: number,
    private readonly onLost?: (reason: string) => void,
  ) {
    this.timer = setInterval(() => {
      this.beating = this.beat();
    }, heartbeatMs);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    if (!(await this.stillHeld())) return;
    await this.refresh().catch(() => undefined);
  }

  /** Moves the heartbeat. One that fails is retried on the next beat. */
  private async refresh(): Promise<void> {
    const now = new Date();
    await this.handle.utimes(now, now);
    this.lastBeat = Date.now();
  }

  async stillHeld(): Promise<boolean> {
    if (this.lost !== null) return false;
    const reason = Date.now() - this.lastBeat > this.staleMs ? await this.afterLateBeat() : await this.replaced();
    if (reason === null || this.lost !== null) return this.lost === null;
    this.lost = `the spool lock was lost: ${reason}`;
    clearInterval(this.timer);
    if (!this.released) this.onLost?.(this.lost);
    return false;
  }

  /**
   * Why `LOCK` is no longer ours (replaced or removed), or null. Its inode tells (the open handle keeps ours from
   * being reused); `withToken` reads the file too.
   */
  private async replaced(withToken = false): Promise<string | null> {
    try {
      const [st, raw] = await Promise.all([stat(this.path), withToken ? readFile(this.path, 'utf8') : null]);
      if (st.ino !== this.ino || (raw !== null && parseHolder(raw)?.token !== this.token)) {
        return `${this.path} was replaced by another process`;
      }
      return null;
    } catch (err) {
      return `${this.path} cannot be read (${(err as NodeJS.ErrnoException).code}): removed by another process?`;
    }
  }

  /**
   * The heartbeat is late past `staleMs` (the event loop or the disk stalled): another process may have taken the
   * lock over meanwhile, but only under the takeover mutex. Under it, a `LOCK` still ours is refreshed and kept (a
   * contender that judged it stale then sees it move and gives up); only a `LOCK` replaced or removed means lost.
   * Concurrent callers share one check.
   */
  private afterLateBeat(): Promise<string | null> {
    this.checkingLate ??= this.checkLate().finally(() => {
      this.checkingLate = null;
    });
    return this.checkingLate;
  }

  private async checkLate(): Promise<string | null> {
    const late = Date.now() - this.lastBeat;
    // A takeover holds the mutex for a few file operations: wait for it a little, then judge.
    for (let attempt = 0; attempt < MUTEX_ATTEMPTS; attempt++) {
      try {
        return await withMutex(this.path, async () => {
          const replaced = await this.replaced(true);
          if (replaced !== null) return replaced;
          try {
            await this.refresh();
            return null;
          } catch (err) {
            return `its heartbeat could not be refreshed for ${late} ms (${(err as Error).message}); another process may take it over after ${this.staleMs} ms`;
          }
        });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
          return `its heartbeat was late by ${late} ms and ${this.path}.takeover cannot be used (${(err as Error).message})`;
        }
        await new Promise((r) => setTimeout(r, MUTEX_RETRY_MS));
      }
    }
    return `its heartbeat was late by ${late} ms while another process held ${this.path}.takeover`;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    heldHere.delete(this.token);
    clearInterval(this.timer);
    await this.beating;
    try {
      // Under the takeover mutex, so that a process taking a stale lock over cannot slip in between the check and
      // the unlink and lose its fresh lock.
      if (this.lost === null && (await withMutex(this.path, async () => (await stat(this.path)).ino === this.ino))) {
        await unlink(this.path).catch(() => undefined);
        await rmdir(`${this.path}.takeover`).catch(() => undefined);
      }
    } catch {
      // Not ours any more, or the mutex is busy: whoever holds it now keeps it.
    } finally {
      await this.handle.close().catch(() => undefined);
    }
  }
}

async function acquire(dir: string, path: string, tmp: string, me: LockHolder, staleMs: number): Promise<void> {
  const deadline = Date.now() + staleMs * 2 + 5_000;
  let watched: Observed | null = null;
  let watchedSince = 0;
  while (Date.now() < deadline) {
    try {
      await link(tmp, path);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const seen = await observe(path);
    if (seen === null) continue;
    if (watched !== null && (seen.raw !== watched.raw || seen.ino !== watched.ino)) {
      // Someone else took it while we watched: judge the new holder from the start.
      watched = null;
    }
    if (watched === null) {
      watched = seen;
      watchedSince = Date.now();
    } else if (seen.mtimeMs !== watched.mtimeMs) {
      throw lockedError(dir, path, seen, staleMs, 'its heartbeat is moving');
    }
    const direct = checkDirectly(seen.holder, me);
    const age = Date.now() - seen.mtimeMs;
    const watchedFor = Date.now() - watchedSince;
    if (direct === 'running' && age <= staleMs) throw lockedError(dir, path, seen, staleMs, 'it is running');
    // An mtime older than the stale delay is trusted only once we saw it stand still for a few heartbeats: the
    // holder's clock (another host on a shared volume) may run behind ours.
    if (
      direct === 'gone' ||
      watchedFor > staleMs ||
      (watchedFor > Math.min(2.5 * HEARTBEAT_MS, staleMs / 2) && age > staleMs)
    ) {
      if (await takeOver(path, tmp, seen)) return;
      watched = null;
      continue;
    }
    await new Promise((r) => setTimeout(r, Math.min(250, staleMs / 10)));
  }
  throw new SpoolLockedError(`SPOOL_DIR ${dir}: the lock ${path} kept changing hands; try again`);
}

/**
 * 'gone' or 'running' when the holder was on this kernel in our pid namespace; null when only the heartbeat tells.
 * 'running' may be a reused pid: it refuses only while the heartbeat is recent.
 */
function checkDirectly(holder: LockHolder | null, me: LockHolder): 'gone' | 'running' | null {
  if (holder === null || !holder.bootId || !holder.pidNs || holder.bootId !== me.bootId || holder.pidNs !== me.pidNs) {
    return null;
  }
  if (holder.pid === me.pid) return holder.token !== undefined && heldHere.has(holder.token) ? 'running' : 'gone';
  try {
    process.kill(holder.pid, 0);
    return 'running';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH' ? 'gone' : 'running';
  }
}

/** Replaces the stale lock `seen` with ours, if it is still the one in place. False if someone else got there. */
async function takeOver(path: string, tmp: string, seen: Observed): Promise<boolean> {
  try {
    return await withMutex(path, async () => {
      const now = await observe(path);
      if (now === null) {
        await link(tmp, path);
        return true;
      }
      if (now.raw !== seen.raw || now.ino !== seen.ino || now.mtimeMs !== seen.mtimeMs) return false;
      await rename(tmp, path);
      return true;
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/**
 * Runs `fn` holding `LOCK.takeover` (a directory: mkdir is atomic). One left by a process killed in the middle of a
 * takeover is removed once older than `STALE_MS`. Rejects with EEXIST while another process holds it.
 */
async function withMutex<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const mutex = `${path}.takeover`;
  try {
    await mkdir(mutex, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const left = await stat(mutex).catch(() => null);
    if (left !== null && Date.now() - left.mtimeMs > STALE_MS) await rmdir(mutex).catch(() => undefined);
    throw err;
  }
  try {
    return await fn();
  } finally {
    await rmdir(mutex).catch(() => undefined);
  }
}

async function observe(path: string): Promise<Observed | null> {
  try {
    const [raw, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    return { holder: parseHolder(raw), raw, ino: st.ino, mtimeMs: st.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function parseHolder(raw: string): LockHolder | null {
  try {
    const holder = JSON.parse(raw) as LockHolder;
    return typeof holder.pid === 'number' && typeof holder.hostname === 'string' ? holder : null;
  } catch {
    return null;
  }
}

function lockedError(dir: string, path: string, seen: Observed, staleMs: number, why: string): SpoolLockedError {
  const h = seen.holder;
  const who = h === null ? 'an unknown process' : `process ${h.pid} on host ${h.hostname} (since ${h.since})`;
  return new SpoolLockedError(
    `SPOOL_DIR ${dir} is in use by ${who}: ${why}. Each listener needs its own SPOOL_DIR; ${path} is taken over ` +
      `automatically ${staleMs / 1000} s after its holder stops.`,
  );
}
