/**
 * What a spool directory holds, read from its files: at open, by the process that took the lock (torn tails cut away,
 * segments with nothing left to drain removed, files that are not segments renamed `*.corrupt`), or without the lock
 * and changing nothing (`inspectSpool`, for `spool status`).
 */

import { open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { cursorPath, newSegment, SEGMENT_FILE, type Segment, segmentPath } from './files.ts';
import { scanEntries } from './format.ts';
import { loadQuarantine, type QuarantineFile } from './quarantine.ts';

export interface SpoolStatus {
  /** Deliveries in the spool, not yet in Redis. */
  depth: number;
  /** Size of the spool's segment files. */
  bytes: number;
  maxBytes: number;
  segments: number;
  /** `receivedAt` of the oldest delivery waiting, or null when empty. */
  oldestReceivedAt: string | null;
  oldestAgeSeconds: number;
  /** Can take a delivery now: open, below SPOOL_MAX_BYTES, and no write failed in the last `RETRY_AFTER_FAILURE_MS`. */
  healthy: boolean;
  lastError: string | null;
  /** Disk writes (each one fsync) since the spool was opened: appends share them (group commit). */
  writes: number;
  /** Deliveries moved aside because Redis could not take them (`quarantine-<n>.log`); `spool drain` requeues them. */
  quarantined: number;
  quarantineFiles: number;
  /** Drained segments whose cursor or removal failed, waiting for `cleanup`. */
  cleanupPending: number;
}

/** What opening found: entries left by an earlier process, and damage it repaired. */
export interface SpoolRecovery {
  depth: number;
  segments: number;
  /** Bytes of torn entries cut from segment ends (a crash during an append). */
  tornBytes: number;
  /** Bytes of damaged entries that will be skipped. */
  corruptBytes: number;
  /** Files that are not spool segments (bad header), renamed `*.corrupt`. */
  badFiles: string[];
}

/** The spool's state read from its files, without taking the lock and changing nothing (`spool status`). */
export async function inspectSpool(dir: string, maxBytes: number): Promise<SpoolStatus & SpoolRecovery> {
  const { segments, recovery } = await loadSegments(dir, false);
  return { ...recovery, ...statusOf(segments, await loadQuarantine(dir), maxBytes, null, 0) };
}

/** Depth, size and oldest delivery of a set of segments; `healthy` here only means "below SPOOL_MAX_BYTES". */
export function statusOf(
  segments: Segment[],
  quarantine: QuarantineFile[],
  maxBytes: number,
  lastError: string | null,
  writes: number,
): SpoolStatus {
  let depth = 0;
  let bytes = 0;
  let quarantined = 0;
  for (const s of segments) {
    depth += s.entries;
    bytes += s.size;
  }
  for (const q of quarantine) {
    quarantined += q.entries;
    bytes += q.size;
  }
  const oldestMs = segments.find((s) => s.entries > 0)?.oldestMs ?? null;
  return {
    depth,
    bytes,
    maxBytes,
    segments: segments.length,
    oldestReceivedAt: oldestMs === null ? null : new Date(oldestMs).toISOString(),
    oldestAgeSeconds: oldestMs === null ? 0 : Math.max(0, (Date.now() - oldestMs) / 1000),
    healthy: bytes < maxBytes,
    lastError,
    writes,
    quarantined,
    quarantineFiles: quarantine.length,
    // Known to the running spool only: read from the files, an idle listener's empty segment would look pending.
    cleanupPending: 0,
  };
}

/** The segments in `dir`, oldest first; with `repair`, torn tails are cut and the files changed as described above. */
export async function loadSegments(
  dir: string,
  repair: boolean,
): Promise<{ segments: Segment[]; recovery: SpoolRecovery }> {
  const recovery: SpoolRecovery = { depth: 0, segments: 0, tornBytes: 0, corruptBytes: 0, badFiles: [] };
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (!repair && (err as NodeJS.ErrnoException).code === 'ENOENT') return { segments: [], recovery };
    throw err;
  }
  const segments: Segment[] = [];
  const seqs = names
    .map((name) => SEGMENT_FILE.exec(name)?.[1])
    .filter((seq): seq is string => seq !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
  for (const seq of seqs) {
    const path = segmentPath(dir, seq);
    const buf = await readFile(path);
    const segment = newSegment(seq, path, buf.length);
    const cursor = Number.parseInt(await readFile(cursorPath(segment), 'utf8').catch(() => ''), 10);
    const scan = scanEntries(buf);
    if (scan.badHeader && scan.entries.length === 0 && buf.length > 0) {
      recovery.badFiles.push(path);
      if (repair) await rename(path, path.replace(/\.log$/, '.corrupt'));
      continue;
    }
    if (Number.isSafeInteger(cursor) && scan.entries.some((e) => e.end === cursor)) segment.drainedOffset = cursor;
    const waiting = scan.entries.filter((e) => e.offset >= segment.drainedOffset);
    segment.entries = waiting.length;
    segment.oldestMs = waiting[0] ? Date.parse(waiting[0].receivedAt) : null;
    segment.corrupt = scan.corruptBytes > 0;
    recovery.corruptBytes += scan.corruptBytes;
    recovery.tornBytes += scan.tornBytes;
    if (repair && scan.tornBytes > 0) {
      const handle = await open(path, 'r+');
      try {
        await handle.truncate(scan.validEnd);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      segment.size = scan.validEnd;
    }
    if (repair && segment.entries === 0 && !segment.corrupt) {
      await unlink(path);
      await unlink(cursorPath(segment)).catch(() => undefined);
      continue;
    }
    segments.push(segment);
    recovery.depth += segment.entries;
  }
  recovery.segments = segments.length;
  return { segments, recovery };
}
