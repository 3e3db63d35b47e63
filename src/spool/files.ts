/**
 * The files of a spool directory: their names and modes, and the writes that make them durable.
 *
 * Files in `SPOOL_DIR` (mode 0700; files 0600: they hold whole bodies and signature headers): `LOCK` (the owning
 * process, see lock.ts), `segment-<n>.log` (format.ts), `segment-<n>.done` (the byte offset drained so far),
 * `segment-<n>.corrupt` (a drained segment that had damaged entries, kept for inspection) and `quarantine-<n>.log`
 * (entries moved aside, same format as a segment).
 */

import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { chmod, lstat, open, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { FILE_HEADER } from './format.ts';

/** What the spool knows of one segment file. */
export interface Segment {
  seq: number;
  path: string;
  /** Bytes in the file. */
  size: number;
  /** Valid entries past `drainedOffset`. */
  entries: number;
  /** Entries before this offset are in Redis. */
  drainedOffset: number;
  /** Time received of the oldest entry not drained (ms), or null. */
  oldestMs: number | null;
  /** Had damaged entries: kept as `*.corrupt` once drained. */
  corrupt: boolean;
  /** `segment-<n>.done` is behind `drainedOffset` (its write failed): `cleanup` writes it again. */
  cursorStale?: boolean;
}

/** A segment of `size` bytes with nothing drained yet. */
export function newSegment(seq: number, path: string, size = FILE_HEADER.length): Segment {
  return { seq, path, size, entries: 0, drainedOffset: FILE_HEADER.length, oldestMs: null, corrupt: false };
}

export const SEGMENT_FILE = /^segment-(\d{16})\.log$/;
export const QUARANTINE_FILE = /^quarantine-(\d{16})\.log$/;

export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

export const segmentPath = (dir: string, seq: number) => join(dir, `segment-${String(seq).padStart(16, '0')}.log`);
export const cursorPath = (segment: Segment) => segment.path.replace(/\.log$/, '.done');
export const quarantinePath = (dir: string, seq: number) =>
  join(dir, `quarantine-${String(seq).padStart(16, '0')}.log`);

/** Spool files hold whole deliveries: directories from earlier versions were 0755 with 0644 files. */
export async function tightenModes(dir: string): Promise<void> {
  const dirStat = await lstat(dir);
  if ((dirStat.mode & 0o777) !== DIR_MODE) await chmod(dir, DIR_MODE);
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    const file = await lstat(path).catch(() => null);
    if (file?.isFile() && (file.mode & 0o077) !== 0) await chmod(path, FILE_MODE);
  }
}

/**
 * How a segment is opened for appends: read-write with O_DSYNC, so that a write returns once its bytes are on disk,
 * in one system call (one trip to the thread pool) instead of a write and an `fdatasync`.
 */
export const SEGMENT_APPEND_FLAGS = constants.O_RDWR | constants.O_DSYNC;

/**
 * Creates a segment or quarantine file with its header, the header and the directory entry synced: a file that
 * exists after a crash is a valid, empty one. Removed again if any step fails. The handle is opened with
 * `SEGMENT_APPEND_FLAGS`: each write on it is durable when it returns.
 */
export async function createSpoolFile(dir: string, path: string): Promise<FileHandle> {
  const handle = await open(path, SEGMENT_APPEND_FLAGS | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
  try {
    await handle.write(FILE_HEADER, 0, FILE_HEADER.length, 0);
    await syncDir(dir);
  } catch (err) {
    await handle.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw err;
  }
  return handle;
}

/** Makes a new file's directory entry durable (a file fsync does not cover its name). */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `parts` one after the other at `position`, whatever the kernel takes per call. */
export async function writeAllAt(handle: FileHandle, parts: Buffer[], position: number): Promise<void> {
  let rest = parts.filter((part) => part.length > 0);
  let at = position;
  while (rest.length > 0) {
    // IOV_MAX (1024 on Linux) bounds the buffers of one writev.
    const chunk = rest.slice(0, 1024);
    let { bytesWritten } = await handle.writev(chunk, at);
    at += bytesWritten;
    const next: Buffer[] = [];
    for (const part of rest) {
      if (bytesWritten >= part.length) bytesWritten -= part.length;
      else {
        next.push(bytesWritten > 0 ? part.subarray(bytesWritten) : part);
        bytesWritten = 0;
      }
    }
    rest = next;
  }
}
