/**
 * Spool checks: `spool` (the directory can be created, written and fsynced), `spool disk` (free space against
 * SPOOL_MAX_BYTES), `spool contents` (deliveries waiting, damage); one `spool` warning when the spool is off.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rmdir, stat, statfs, unlink } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import type { Config } from '../../config/config.ts';
import { inspectSpool } from '../../spool/recovery.ts';
import { formatAge, formatBytes } from '../format.ts';
import { type CheckResult, describe, fail, ok, warn } from './check.ts';

export async function spoolChecks(config: Config): Promise<CheckResult[]> {
  const { dir, maxBytes } = config.spool;
  if (maxBytes === 0) {
    return [
      warn(
        'spool',
        `off (SPOOL_MAX_BYTES=0), no spool: while Redis is slow or down, deliveries are answered ENQUEUE_FAILURE_STATUS (${config.enqueueFailureStatus}) and kept only in the error log`,
        'set SPOOL_MAX_BYTES (1 GiB by default) so that deliveries are kept on disk while Redis is away',
      ),
    ];
  }
  const path = resolve(dir);
  const shown = dir === path ? dir : `${dir} (${path})`;
  const results: CheckResult[] = [];
  try {
    const existed = await probeDirectory(path);
    results.push(
      ok(
        'spool',
        existed
          ? `${shown}: writable (a probe file was written, fsynced and deleted)`
          : `${shown} does not exist yet; it can be created and written (the listener creates it)`,
      ),
    );
  } catch (err) {
    results.push(
      fail(
        'spool',
        `${shown} cannot be used: ${describe(err)}`,
        "point SPOOL_DIR at a directory on a persistent local disk that the service's user can create and write",
      ),
    );
    return results;
  }

  let status: Awaited<ReturnType<typeof inspectSpool>> | null = null;
  let statusError: string | null = null;
  try {
    status = await inspectSpool(path, maxBytes);
  } catch (err) {
    statusError = describe(err);
  }

  try {
    const fs = await statfs(await nearestExisting(path));
    const free = fs.bavail * fs.bsize;
    const inUse = status?.bytes ?? 0;
    const room = maxBytes - inUse;
    const finding = `${formatBytes(free)} free on its file system; SPOOL_MAX_BYTES ${formatBytes(maxBytes)}${inUse > 0 ? `, ${formatBytes(inUse)} in use` : ''}`;
    results.push(
      free < room
        ? warn(
            'spool disk',
            `${finding}: less free space than the spool may take, so a long Redis outage fills the disk first (deliveries are then refused)`,
            `free space on that disk, or lower SPOOL_MAX_BYTES below ${formatBytes(free + inUse)}`,
          )
        : ok('spool disk', finding),
    );
  } catch (err) {
    results.push(
      warn('spool disk', `free space unknown (${describe(err)})`, 'make sure the disk has room for SPOOL_MAX_BYTES'),
    );
  }

  if (status === null) {
    results.push(
      fail(
        'spool contents',
        `cannot be read: ${statusError}`,
        "give the service's user read access to SPOOL_DIR and its files",
      ),
    );
    return results;
  }
  const damaged =
    status.corruptBytes > 0 || status.badFiles.length > 0
      ? `; damaged: ${status.corruptBytes} bytes skipped, ${status.badFiles.length} unreadable files`
      : '';
  const oldest =
    status.oldestReceivedAt === null
      ? ''
      : `, oldest received ${status.oldestReceivedAt} (${formatAge(status.oldestAgeSeconds)} ago)`;
  const held = `${status.depth} deliveries (${formatBytes(status.bytes)} of ${formatBytes(maxBytes)})${oldest}${damaged}`;
  if (status.bytes >= maxBytes) {
    results.push(
      fail(
        'spool contents',
        `full: ${held}; deliveries Redis cannot take now get ENQUEUE_FAILURE_STATUS`,
        'bring Redis back so the listener drains it (or, with no listener on this SPOOL_DIR: sellsy-webhooks spool drain); raise SPOOL_MAX_BYTES if the disk allows',
      ),
    );
  } else if (status.depth > 0 || damaged !== '') {
    results.push(
      warn(
        'spool contents',
        `holds ${held}`,
        'a running listener moves them into the queue once Redis answers; with no listener on this SPOOL_DIR: sellsy-webhooks spool drain',
      ),
    );
  } else {
    results.push(ok('spool contents', 'empty'));
  }
  return results;
}

/**
 * Whether `path` is a directory one can write and fsync in: creates it when missing (then removes what it created)
 * and writes a probe file. Returns whether it existed; throws what stops it.
 */
async function probeDirectory(path: string): Promise<boolean> {
  let firstCreated: string | undefined;
  try {
    const s = await stat(path);
    if (!s.isDirectory()) throw new Error(`${path} is not a directory`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    firstCreated = await mkdir(path, { recursive: true });
  }
  const probe = join(path, `.doctor-${process.pid}-${randomBytes(4).toString('hex')}.probe`);
  try {
    const file = await open(probe, 'wx');
    try {
      await file.writeFile('sellsy-webhooks doctor probe\n');
      await file.datasync();
    } finally {
      await file.close();
    }
    await unlink(probe);
  } finally {
    if (firstCreated !== undefined) {
      // The directories created above, deepest first; rmdir never removes one that something else wrote into.
      const depth = relative(firstCreated, path).split('/').filter(Boolean).length;
      let dir = path;
      for (let i = 0; i <= depth; i++, dir = dirname(dir)) await rmdir(dir).catch(() => undefined);
    }
  }
  return firstCreated === undefined;
}

async function nearestExisting(path: string): Promise<string> {
  let dir = path;
  for (;;) {
    try {
      await stat(dir);
      return dir;
    } catch (err) {
      const parent = dirname(dir);
      if (parent === dir) throw err;
      dir = parent;
    }
  }
}
