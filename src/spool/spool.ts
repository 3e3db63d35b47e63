/**
 * The spool: a durable local buffer for deliveries that Redis could not take in time.
 *
 * `append` resolves only once the entry is on disk (written and `fdatasync`ed). Appends that arrive while a write
 * is in progress share the next write and its single fsync (group commit), so a burst costs one fsync per turn of the
 * disk, not one per request. `drain` hands entries to a sink, oldest first, and forgets them only once the sink
 * resolved: an entry is removed after Redis confirmed it, never before. What was drained is remembered per segment
 * in `segment-<n>.done` (the byte offset drained so far); losing that file (a power loss) only means re-sending
 * entries that Redis already holds, which the queue's deduplication turns into no-ops. A segment whose entries are
 * all in Redis is removed without writing its cursor; a cursor write or a removal that fails (disk full, read-only)
 * is retried by `cleanup`, which needs no Redis, so a spool whose depth is 0 still gives its space back.
 *
 * An entry the sink can never take (Redis refuses it, or cannot confirm it alone, again and again) would block every
 * entry behind it: the caller may have it moved aside (`quarantine`, see quarantine.ts) before it is dropped from its
 * segment; `requeueQuarantined` turns the quarantine files back into segments (`spool drain`).
 *
 * The files in `SPOOL_DIR` and their modes: files.ts.
 *
 * Before a group commit is acknowledged, the spool checks that its lock is still its own and that the segment was
 * not deleted (another process took the directory over); if not, the batch and every later append fail with
 * `lock_lost`, for good: a file another process may drain and delete is never answered from.
 *
 * Failure codes: `SpoolError` with reason `full` (SPOOL_MAX_BYTES reached), `io` (disk full, read-only file system,
 * I/O error; the segment is cut back to its last good entry), `lock_lost`, `closed`.
 */

import type { FileHandle } from 'node:fs/promises';
import { mkdir, open, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { SpoolError } from '../errors.ts';
import type { WebhookJob } from '../queue/contract.ts';
import { type DrainOptions, drainSettings, nextBatch } from './drain-batches.ts';
import {
  createSpoolFile,
  cursorPath,
  DIR_MODE,
  FILE_MODE,
  newSegment,
  SEGMENT_APPEND_FLAGS,
  type Segment,
  segmentPath,
  tightenModes,
  writeAllAt,
} from './files.ts';
import { encodeEntryParts, type ScannedEntry, scanEntries } from './format.ts';
import { lockSpoolDir, type SpoolLock } from './lock.ts';
import { loadQuarantine, Quarantine } from './quarantine.ts';
import { loadSegments, type SpoolRecovery, type SpoolStatus, statusOf } from './recovery.ts';

interface SpoolOptions {
  dir: string;
  /** Appends that would take the spool's files past this size fail with `SpoolError('full')`. */
  maxBytes: number;
  /** A new segment file starts once the current one is past this size. Default 16 MiB. */
  segmentBytes?: number;
  /** A lock whose holder stopped refreshing it is taken over after this long. Default `STALE_MS` (lock.ts). */
  lockStaleMs?: number;
  /** Told (at error level, once) when the lock is lost. */
  logger?: Pick<Logger, 'error'>;
}

interface PendingAppend {
  /** The entry's bytes, in parts (`encodeEntryParts`). */
  entry: Buffer[];
  bytes: number;
  receivedMs: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

const DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024;
const RETRY_AFTER_FAILURE_MS = 5_000;

export class Spool {
  /** The segment appends go to; its file is open only while deliveries are being spooled (null: closed). */
  private active: { segment: Segment; handle: FileHandle | null } | null = null;
  private pending: PendingAppend[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;
  /** Writes, seals and closes run one at a time, in order. */
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  /** The last failed append, until one succeeds (a `full` one also clears once a drain frees space). */
  private lastFailure: { error: SpoolError; at: number } | null = null;
  private nextSeq: number;
  private writes = 0;
  /** Set once the lock was lost: every append fails with it from then on. */
  private lost: SpoolError | null = null;

  private constructor(
    private readonly opts: SpoolOptions & { segmentBytes: number },
    private readonly lock: SpoolLock | null,
    private readonly segments: Segment[],
    private readonly quarantine: Quarantine,
  ) {
    this.nextSeq = (segments.at(-1)?.seq ?? 0) + 1;
  }

  /** Stops the spool from acknowledging anything: another process holds (or held) the directory. */
  private loseLock(message: string): SpoolError {
    if (this.lost === null) {
      this.lost = new SpoolError(`${message}; deliveries are no longer spooled by this process`, 'lock_lost');
      this.opts.logger?.error({ err: this.lost.message, dir: this.opts.dir }, 'spool lock lost');
    }
    return this.lost;
  }

  /** Takes the directory's lock, repairs torn tails, and loads what an earlier process left. */
  static async open(options: SpoolOptions): Promise<{ spool: Spool; recovery: SpoolRecovery }> {
    const opts = { segmentBytes: DEFAULT_SEGMENT_BYTES, ...options };
    try {
      await mkdir(opts.dir, { recursive: true, mode: DIR_MODE });
    } catch (err) {
      throw new SpoolError(`SPOOL_DIR ${opts.dir} cannot be created: ${(err as Error).message}`, 'io', { cause: err });
    }
    let spool: Spool | null = null;
    const lock = await lockSpoolDir(opts.dir, {
      staleMs: opts.lockStaleMs,
      onLost: (reason) => spool?.loseLock(reason),
    }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === undefined || err.code.startsWith('SW_ERR')) throw err;
      throw new SpoolError(`SPOOL_DIR ${opts.dir} is not writable: ${err.message}`, 'io', { cause: err });
    });
    try {
      await tightenModes(opts.dir);
      const { segments, recovery } = await loadSegments(opts.dir, true);
      spool = new Spool(opts, lock, segments, new Quarantine(opts.dir, await loadQuarantine(opts.dir)));
      // The first spooled delivery should not also pay for creating a file and syncing its directory.
      await spool.createSegment(false).catch(() => undefined);
      return { spool, recovery };
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  /** Makes one delivery durable. Rejects with `SpoolError`. */
  append(job: WebhookJob): Promise<void> {
    if (this.closed) return Promise.reject(new SpoolError('the spool is closed', 'closed'));
    if (this.lost !== null) return Promise.reject(this.lost);
    const entry = encodeEntryParts(job);
    let length = 0;
    for (const part of entry) length += part.length;
    if (this.bytes() + this.pendingBytes + length > this.opts.maxBytes) {
      const error = new SpoolError(
        `the spool is full (SPOOL_MAX_BYTES=${this.opts.maxBytes}, ${this.bytes()} bytes used)`,
        'full',
      );
      this.lastFailure = { error, at: Date.now() };
      return Promise.reject(error);
    }
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ entry, bytes: length, receivedMs: Date.parse(job.data.receivedAt), resolve, reject });
      this.pendingBytes += length;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // Appends of the same event-loop turn join this write.
        setImmediate(() => {
          this.chain = this.chain.then(this.flush);
        });
      }
    });
  }

  private readonly flush = async (): Promise<void> => {
    this.flushScheduled = false;
    const batch = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    if (batch.length === 0) return;
    // Written as they are (writev), not concatenated: a group commit of large bodies is not copied once more.
    const parts = batch.flatMap((p) => p.entry);
    let total = 0;
    for (const p of batch) total += p.bytes;
    let active: { segment: Segment; handle: FileHandle | null } | null = null;
    try {
      if (this.active !== null && this.active.segment.size + total > this.opts.segmentBytes) {
        await this.sealActive();
      }
      active = this.active ?? (await this.createSegment());
      active.handle ??= await open(active.segment.path, SEGMENT_APPEND_FLAGS);
      const { segment, handle } = active;
      // Durable when it returns (O_DSYNC): no fdatasync after it.
      await writeAllAt(handle, parts, segment.size);
      // After the write, not beside it: a directory taken over meanwhile may have been read without this batch.
      await this.checkStillOurs(handle);
      this.writes++;
      segment.size += total;
      if (segment.entries === 0) segment.oldestMs = (batch[0] as PendingAppend).receivedMs;
      segment.entries += batch.length;
      this.lastFailure = null;
      for (const p of batch) p.resolve();
    } catch (err) {
      if (err instanceof SpoolError && err.reason === 'lock_lost') {
        // The file may be another process's to drain now: leave it as it is.
        await this.sealActive().catch(() => undefined);
        for (const p of batch) p.reject(err);
        return;
      }
      const error = new SpoolError(`the spool could not write the delivery: ${(err as Error).message}`, 'io', {
        cause: err,
      });
      this.lastFailure = { error, at: Date.now() };
      if (active !== null) {
        // Cut the segment back to its last good entry; if even that fails, stop writing to it (the next open cuts
        // the torn tail away).
        const failed = active;
        if (failed.handle !== null) await failed.handle.truncate(failed.segment.size).catch(() => this.sealActive());
      }
      for (const p of batch) p.reject(error);
    }
  };

  /**
   * The lock still ours and the segment still in the directory, once per group commit (two stats in the thread
   * pool). Throws `SpoolError('lock_lost')` otherwise.
   */
  private async checkStillOurs(handle: FileHandle): Promise<void> {
    if (this.lost !== null) throw this.lost;
    const [held, file] = await Promise.all([this.lock?.stillHeld() ?? true, handle.stat()]);
    if (!held) throw this.loseLock(this.lock?.lost ?? 'the spool lock was lost');
    if (file.nlink === 0) throw this.loseLock('the spool segment being written was deleted by another process');
  }

  /**
   * Starts the next segment file (header written and synced, directory synced). Created ahead of need (`keepOpen`
   * false), the file is closed until a delivery is spooled: an idle spool holds no open file.
   */
  private async createSegment(keepOpen = true): Promise<{ segment: Segment; handle: FileHandle | null }> {
    const seq = this.nextSeq++;
    const path = segmentPath(this.opts.dir, seq);
    const handle = await createSpoolFile(this.opts.dir, path);
    const segment = newSegment(seq, path);
    this.segments.push(segment);
    if (!keepOpen) await handle.close();
    this.active = { segment, handle: keepOpen ? handle : null };
    return this.active;
  }

  /** Stops appending to the current segment; the next append starts a new one. */
  private async sealActive(): Promise<void> {
    const active = this.active;
    if (active === null) return;
    this.active = null;
    await active.handle?.close().catch(() => undefined);
    // A lost lock leaves the files to their new owner.
    if (active.segment.entries === 0 && this.lost === null) await this.removeSegment(active.segment);
  }

  /**
   * Sends every entry to `sink`, oldest first, in batches bounded by `limits` (entries and bytes, at least one
   * entry; default 100 and 2 MiB), and forgets each batch once `sink` resolved: an entry is removed after Redis
   * confirmed it, never before. When `sink` rejects, `onFailure` decides (default `stop`: the error is rethrown, what
   * was not confirmed stays in the spool). Returns the number of entries drained (quarantined ones included).
   * One drain at a time (the caller's job).
   */
  async drain(sink: (jobs: WebhookJob[], bytes: number) => Promise<void>, options: DrainOptions = {}): Promise<number> {
    if (this.lost !== null) throw this.lost;
    const { limits, onFailure } = drainSettings(options);
    // Entries still being written are left for the next drain; the segment holding them is sealed so that this
    // drain reads files nobody appends to.
    await this.inChain(async () => {
      if (this.active !== null && this.active.segment.entries > 0) {
        await this.sealActive();
        // Ready for the next delivery Redis cannot take; if this fails, the next append tries again.
        await this.createSegment(false).catch(() => undefined);
      }
    });
    let drained = 0;
    for (const segment of this.segments.slice()) {
      if (this.active?.segment === segment) continue;
      const buf = await readFile(segment.path);
      const { entries } = scanEntries(buf, segment.drainedOffset);
      let i = 0;
      while (i < entries.length) {
        const { batch, bytes } = nextBatch(entries, i, limits());
        const n = batch.length;
        // Decoded here, batch by batch (see `ScannedEntry.job`).
        const jobs = batch.map((r) => r.job);
        try {
          await sink(jobs, bytes);
        } catch (err) {
          const verdict = onFailure ? await onFailure(jobs, bytes, err) : 'stop';
          if (verdict === 'retry') continue;
          if (verdict !== 'quarantine' || n !== 1) throw err;
          const [entry] = batch as [ScannedEntry];
          await this.inChain(() => this.quarantine.append(buf.subarray(entry.offset, entry.end)));
        }
        i += n;
        const next = entries[i];
        segment.drainedOffset = (batch.at(-1) as ScannedEntry).end;
        segment.entries = Math.max(0, segment.entries - n);
        segment.oldestMs = next ? Date.parse(next.receivedAt) : null;
        drained += n;
        // The last batch of a segment needs no cursor: the segment goes. A cursor that cannot be written is only
        // behind (a reopen resends entries Redis holds, which it answers as duplicates): the drain goes on.
        if (i < entries.length) await this.writeCursor(segment);
      }
      await this.tryRemove(segment);
    }
    return drained;
  }

  /** Runs `task` in the chain of writes, seals and closes, and waits for it. */
  private inChain(task: () => Promise<void>): Promise<void> {
    const done = this.chain.then(task);
    this.chain = done.catch(() => undefined);
    return done;
  }

  private async writeCursor(segment: Segment): Promise<boolean> {
    try {
      await writeFile(`${cursorPath(segment)}.tmp`, String(segment.drainedOffset), { mode: FILE_MODE });
      await rename(`${cursorPath(segment)}.tmp`, cursorPath(segment));
      segment.cursorStale = false;
      return true;
    } catch {
      segment.cursorStale = true;
      return false;
    }
  }

  /** Removes a drained segment; if that fails, it stays listed (and counted) for `cleanup` to try again. */
  private async tryRemove(segment: Segment): Promise<boolean> {
    if (segment.entries > 0 || this.active?.segment === segment) return false;
    try {
      await this.removeSegment(segment);
      return true;
    } catch {
      // Until it goes, its cursor says it was drained: a restart does not resend it all.
      if (segment.drainedOffset < segment.size) await this.writeCursor(segment);
      return false;
    }
  }

  /** Drained segments not removed yet, or whose cursor is behind: what `cleanup` has to do. */
  cleanupPending(): number {
    return this.segments.filter((s) => this.active?.segment !== s && (s.entries === 0 || s.cursorStale === true))
      .length;
  }

  /**
   * Retries what a drain could not finish on disk: removes segments whose entries are all in Redis, writes cursors
   * that are behind. Needs no Redis. Returns what is still pending. Not while a drain runs (the caller's job).
   */
  async cleanup(): Promise<number> {
    for (const segment of this.segments.slice()) {
      if (this.active?.segment === segment) continue;
      if (segment.entries === 0) await this.tryRemove(segment);
      else if (segment.cursorStale) await this.writeCursor(segment);
    }
    return this.cleanupPending();
  }

  /**
   * Turns every quarantine file back into a segment (the newest ones), so that the next drain sends its entries to
   * Redis again. Returns the number of entries requeued.
   */
  requeueQuarantined(): Promise<number> {
    let requeued = 0;
    return this.inChain(async () => {
      requeued = await this.quarantine.requeue(
        () => this.nextSeq++,
        (segment) => this.segments.push(segment),
      );
    }).then(() => requeued);
  }

  private async removeSegment(segment: Segment): Promise<void> {
    try {
      if (segment.corrupt) await rename(segment.path, segment.path.replace(/\.log$/, '.corrupt'));
      else await unlink(segment.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const index = this.segments.indexOf(segment);
    if (index !== -1) this.segments.splice(index, 1);
    await unlink(cursorPath(segment)).catch(() => undefined);
    if (this.lastFailure?.error.reason === 'full') this.lastFailure = null;
  }

  status(): SpoolStatus {
    const failure = this.lastFailure;
    const status = statusOf(
      this.segments,
      this.quarantine.files,
      this.opts.maxBytes,
      failure?.error.message ?? null,
      this.writes,
    );
    status.cleanupPending = this.cleanupPending();
    if (this.lost !== null) status.lastError = this.lost.message;
    status.healthy &&=
      !this.closed && this.lost === null && (failure === null || Date.now() - failure.at > RETRY_AFTER_FAILURE_MS);
    return status;
  }

  private bytes(): number {
    let total = 0;
    for (const s of this.segments) total += s.size;
    for (const q of this.quarantine.files) total += q.size;
    return total;
  }

  /** Finishes pending appends, closes the current segment and releases the directory. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.chain = this.chain
      .then(this.flush)
      .then(() => this.sealActive())
      .then(() => this.quarantine.close());
    await this.chain;
    await this.lock?.release();
  }
}
