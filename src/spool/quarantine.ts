/**
 * The quarantine: entries the drain's sink can never take, moved aside so that they do not block the entries behind
 * them.
 *
 * An entry is copied byte for byte and fsynced into `quarantine-<n>.log` (same format as a segment) before the drain
 * drops it from its segment. Quarantined entries are never deleted by the spool; `requeue` turns their files back into
 * segments (`spool drain`).
 */

import type { FileHandle } from 'node:fs/promises';
import { readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import {
  createSpoolFile,
  newSegment,
  QUARANTINE_FILE,
  quarantinePath,
  type Segment,
  segmentPath,
  syncDir,
  writeAllAt,
} from './files.ts';
import { FILE_HEADER, scanEntries } from './format.ts';

/** A quarantine file: entries moved aside, kept until an operator requeues them. */
export interface QuarantineFile {
  seq: number;
  path: string;
  size: number;
  entries: number;
}

/** The quarantine files in `dir` and the entries they hold. */
export async function loadQuarantine(dir: string): Promise<QuarantineFile[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const files: QuarantineFile[] = [];
  for (const name of names.sort()) {
    const seq = QUARANTINE_FILE.exec(name)?.[1];
    if (seq === undefined) continue;
    const path = join(dir, name);
    const buf = await readFile(path);
    files.push({ seq: Number(seq), path, size: buf.length, entries: scanEntries(buf).entries.length });
  }
  return files;
}

/** The quarantine files of a locked spool directory. Not safe for concurrent calls (the spool runs them in order). */
export class Quarantine {
  /** The file entries are appended to, open (null until the first one of this process). */
  private current: { file: QuarantineFile; handle: FileHandle } | null = null;

  constructor(
    private readonly dir: string,
    readonly files: QuarantineFile[],
  ) {}

  /** Appends one entry, as it is, to the quarantine file; on disk when it resolves (the file is O_DSYNC). */
  async append(entry: Buffer): Promise<void> {
    if (this.current === null) {
      const seq = this.files.reduce((max, q) => Math.max(max, q.seq), 0) + 1;
      const path = quarantinePath(this.dir, seq);
      const handle = await createSpoolFile(this.dir, path);
      const file = { seq, path, size: FILE_HEADER.length, entries: 0 };
      this.files.push(file);
      this.current = { file, handle };
    }
    const { file, handle } = this.current;
    try {
      await writeAllAt(handle, [entry], file.size);
    } catch (err) {
      await handle.truncate(file.size).catch(() => undefined);
      throw err;
    }
    file.size += entry.length;
    file.entries++;
  }

  /**
   * Turns every quarantine file back into a segment numbered `nextSeq()`, handed to `add` as soon as its file is
   * renamed. Returns the number of entries requeued.
   */
  async requeue(nextSeq: () => number, add: (segment: Segment) => void): Promise<number> {
    await this.current?.handle.close().catch(() => undefined);
    this.current = null;
    let requeued = 0;
    for (const file of this.files.slice()) {
      const seq = nextSeq();
      const path = segmentPath(this.dir, seq);
      await rename(file.path, path);
      this.files.splice(this.files.indexOf(file), 1);
      const { entries } = scanEntries(await readFile(path));
      const segment = newSegment(seq, path, file.size);
      segment.entries = entries.length;
      segment.oldestMs = entries[0] ? Date.parse(entries[0].receivedAt) : null;
      add(segment);
      requeued += entries.length;
    }
    await syncDir(this.dir);
    return requeued;
  }

  async close(): Promise<void> {
    await this.current?.handle.close();
  }
}
