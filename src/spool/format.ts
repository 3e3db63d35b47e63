/**
 * On-disk format of the spool: append-only segment files of self-checking records.
 *
 * A segment file (`segment-<16-digit sequence>.log`) is an 8-byte file header, the ASCII `SWSPOOL1`, followed by
 * records, each:
 *
 *   offset 0  u32 LE  magic 0x31525753 (the ASCII bytes `SWR1`)
 *   offset 4  u32 LE  payload length in bytes (at most MAX_RECORD_BYTES)
 *   offset 8  u32 LE  CRC-32 (zlib) of the 4 length bytes followed by the payload
 *   offset 12 payload: UTF-8 JSON `{"name": <job name>, "data": <WebhookJobData>}` (the queue contract)
 *
 * A record is valid only when its magic, length and checksum agree. A crash while appending leaves at most a torn
 * record at the end of the segment being written: `scanRecords` reports it (`tornBytes`) and the spool truncates it
 * away on open, so it is never replayed. A damaged record elsewhere (`corruptBytes`) is skipped by searching for the
 * next valid record, and the segment is kept for inspection (`*.corrupt`) instead of being deleted once drained.
 *
 * Why not an embedded database: the spool needs appends that many concurrent requests share one fsync for, run off
 * the event loop (Node's file I/O runs in libuv's thread pool). better-sqlite3 and similar synchronous stores would
 * stall every request for the length of each fsync; this format is the few lines below.
 */
import { crc32 } from 'node:zlib';
import type { WebhookJob } from '../queue/contract.ts';

export const FILE_HEADER = Buffer.from('SWSPOOL1', 'ascii');
export const RECORD_MAGIC = 0x31525753;
export const RECORD_HEADER_BYTES = 12;
/** Far above any delivery (BODY_LIMIT_BYTES is at most 64 MiB, and the JSON at most ~3× that when escaped). */
export const MAX_RECORD_BYTES = 256 * 1024 * 1024;

export function encodeRecord(job: WebhookJob): Buffer {
  const payload = Buffer.from(JSON.stringify({ name: job.name, data: job.data }), 'utf8');
  const record = Buffer.allocUnsafe(RECORD_HEADER_BYTES + payload.length);
  record.writeUInt32LE(RECORD_MAGIC, 0);
  record.writeUInt32LE(payload.length, 4);
  record.writeUInt32LE(crc32(payload, crc32(record.subarray(4, 8))), 8);
  payload.copy(record, RECORD_HEADER_BYTES);
  return record;
}

export interface ScannedRecord {
  /** Offset of the record's first byte in the segment. */
  offset: number;
  /** Offset just past the record. */
  end: number;
  job: WebhookJob;
}

export interface ScanResult {
  records: ScannedRecord[];
  /** Offset past the last valid record: where appending may resume. */
  validEnd: number;
  /** Bytes after the last valid record that do not form one: an append cut short by a crash. */
  tornBytes: number;
  /** Bytes between valid records that failed their checks (damage, not a crash). */
  corruptBytes: number;
  /** The file does not start with the segment header. */
  badHeader: boolean;
}

/** Reads every valid record of a segment's bytes, from `from` (a record boundary) on. */
export function scanRecords(buf: Buffer, from = FILE_HEADER.length): ScanResult {
  const badHeader = buf.length < FILE_HEADER.length || !buf.subarray(0, FILE_HEADER.length).equals(FILE_HEADER);
  const records: ScannedRecord[] = [];
  let pos = Math.max(from, FILE_HEADER.length);
  let validEnd = pos;
  let corruptBytes = 0;
  while (pos < buf.length) {
    const record = readRecordAt(buf, pos);
    if (record !== null) {
      if (pos > validEnd) corruptBytes += pos - validEnd;
      records.push(record);
      pos = record.end;
      validEnd = pos;
      continue;
    }
    // Not a record here: look for the next magic number that starts a valid record.
    pos = nextMagic(buf, pos + 1);
  }
  return { records, validEnd, tornBytes: buf.length - validEnd, corruptBytes, badHeader };
}

function readRecordAt(buf: Buffer, pos: number): ScannedRecord | null {
  if (pos + RECORD_HEADER_BYTES > buf.length || buf.readUInt32LE(pos) !== RECORD_MAGIC) return null;
  const length = buf.readUInt32LE(pos + 4);
  const end = pos + RECORD_HEADER_BYTES + length;
  if (length > MAX_RECORD_BYTES || end > buf.length) return null;
  const payload = buf.subarray(pos + RECORD_HEADER_BYTES, end);
  if (crc32(payload, crc32(buf.subarray(pos + 4, pos + 8))) !== buf.readUInt32LE(pos + 8)) return null;
  try {
    const job = JSON.parse(payload.toString('utf8')) as WebhookJob;
    if (typeof job?.name !== 'string' || typeof job.data !== 'object' || job.data === null) return null;
    return { offset: pos, end, job };
  } catch {
    return null;
  }
}

const MAGIC_BYTES = Buffer.alloc(4);
MAGIC_BYTES.writeUInt32LE(RECORD_MAGIC, 0);

function nextMagic(buf: Buffer, from: number): number {
  const found = buf.indexOf(MAGIC_BYTES, from);
  return found === -1 ? buf.length : found;
}
