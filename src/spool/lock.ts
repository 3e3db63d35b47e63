/**
 * One process per spool directory: a `LOCK` file created exclusively, holding the owner's pid and host name.
 *
 * A lock left by a process that is gone (same host, pid not running, or our own pid: a container restarted with the
 * same pid 1) is taken over. A lock held by a live process, or by another host (a shared volume), is refused with
 * `SpoolLockedError`, which names the holder. Node has no `flock`; a lock file with the owner's identity is how
 * PostgreSQL's `postmaster.pid` does the same thing, and it survives a `kill -9` without waiting for a timeout.
 */
import { open, readFile, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { SpoolLockedError } from '../errors.ts';

export const LOCK_FILE = 'LOCK';

interface LockOwner {
  pid: number;
  hostname: string;
  since: string;
}

export interface SpoolLock {
  path: string;
  release(): Promise<void>;
}

/** Lock files this process holds: its own pid in a lock file is stale only if this process did not write it. */
const heldHere = new Set<string>();

export async function lockSpoolDir(dir: string): Promise<SpoolLock> {
  const path = resolve(dir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, hostname: hostname(), since: new Date().toISOString() };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, 'wx', 0o644);
      await handle.writeFile(`${JSON.stringify(me)}\n`);
      await handle.close();
      heldHere.add(path);
      return {
        path,
        async release() {
          heldHere.delete(path);
          const owner = await readOwner(path);
          if (owner?.pid === me.pid && owner.hostname === me.hostname) await unlink(path).catch(() => undefined);
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = await readOwner(path);
    if (owner !== null && (heldHere.has(path) || !isStale(owner, me))) {
      throw new SpoolLockedError(
        `SPOOL_DIR ${dir} is in use by process ${owner.pid} on host ${owner.hostname} (since ${owner.since}); ` +
          'each listener needs its own SPOOL_DIR. If that process is gone, delete ' +
          `${path} and start again.`,
      );
    }
    // Left by a process that no longer runs (or unreadable: a crash while it was being written).
    await unlink(path).catch(() => undefined);
  }
  throw new SpoolLockedError(`SPOOL_DIR ${dir}: another process took the lock ${path} at the same time`);
}

async function readOwner(path: string): Promise<LockOwner | null> {
  try {
    const owner = JSON.parse(await readFile(path, 'utf8')) as LockOwner;
    return typeof owner.pid === 'number' && typeof owner.hostname === 'string' ? owner : null;
  } catch {
    return null;
  }
}

function isStale(owner: LockOwner, me: LockOwner): boolean {
  if (owner.hostname !== me.hostname) return false;
  if (owner.pid === me.pid) return true;
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
