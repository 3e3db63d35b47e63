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
 * or, for a job the listener built from a body (most records, and the only large ones), a record of about the size
 * of that body:
 *
 *   offset 0  u32 LE  magic 0x32525753 (the ASCII bytes `SWR2`)
 *   offset 4  u32 LE  payload length in bytes (at most MAX_RECORD_BYTES)
 *   offset 8  u32 LE  CRC-32 (zlib) of the 4 length bytes followed by the payload
 *   offset 12 payload: u32 LE length H of a UTF-8 JSON header `{"name", "data"}`, where `data` is the job's data
 *             without `rawBody`, `rawBodyBase64`, `event` and `parseProblem`; then the body's bytes, exactly as received.
 *
 * Reading an `SWR2` record derives the missing fields from the bytes as the listener did (`rawBodyFields`, then
 * `parseDelivery` with the record's `contentType`; both are deterministic), so the job drained equals the job that
 * was spooled. Both kinds are read; records are written as `SWR2` when the job carries its body's bytes (see
 * `bindRawBody` in the queue contract), as `SWR1` otherwise.
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
import { boundRawBody, rawBodyFields, type WebhookJob, type WebhookJobData } from '../queue/contract.ts';
import { parseDelivery } from '../sellsy/payload.ts';

export const FILE_HEADER = Buffer.from('SWSPOOL1', 'ascii');
/** `SWR1`: the job as JSON. */
const RECORD_MAGIC = 0x31525753;
/** `SWR2`: a small JSON header, then the body's bytes. */
const BODY_RECORD_MAGIC = 0x32525753;
export const RECORD_HEADER_BYTES = 12;
/** Far above any delivery (BODY_LIMIT_BYTES is at most 64 MiB, and the JSON at most ~3× that when escaped). */
export const MAX_RECORD_BYTES = 256 * 1024 * 1024;

export function encodeRecord(job: WebhookJob): Buffer {
  const parts = encodeRecordParts(job);
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
}

/**
 * A record as the buffers to write one after the other: for an `SWR2` record, its header and the body's own bytes
 * (not copied, so a spooled body exists once in memory while it is written).
 */
export function encodeRecordParts(job: WebhookJob): Buffer[] {
  const raw = boundRawBody(job.data);
  if (raw !== undefined) return encodeBodyRecord(job, raw);
  const payload = Buffer.from(JSON.stringify({ name: job.name, data: job.data }), 'utf8');
  const record = Buffer.allocUnsafe(RECORD_HEADER_BYTES + payload.length);
  record.writeUInt32LE(RECORD_MAGIC, 0);
  record.writeUInt32LE(payload.length, 4);
  record.writeUInt32LE(crc32(payload, crc32(record.subarray(4, 8))), 8);
  payload.copy(record, RECORD_HEADER_BYTES);
  return [record];
}

/** The fields an `SWR2` record derives from the body instead of storing. */
const DERIVED_FIELDS = new Set(['rawBody', 'rawBodyBase64', 'event', 'parseProblem']);

function encodeBodyRecord(job: WebhookJob, raw: Buffer): Buffer[] {
  // Copied key by key: the derived fields may be computed on read (`deriveBodyFieldsLazily`), and are not read here.
  const rest: Record<string, unknown> = {};
  for (const key of Object.keys(job.data)) {
    if (!DERIVED_FIELDS.has(key)) rest[key] = job.data[key as keyof WebhookJobData];
  }
  const json = Buffer.from(JSON.stringify({ name: job.name, data: rest }), 'utf8');
  const length = 4 + json.length + raw.length;
  const head = Buffer.allocUnsafe(RECORD_HEADER_BYTES + 4 + json.length);
  head.writeUInt32LE(BODY_RECORD_MAGIC, 0);
  head.writeUInt32LE(length, 4);
  head.writeUInt32LE(json.length, RECORD_HEADER_BYTES);
  json.copy(head, RECORD_HEADER_BYTES + 4);
  const crc = crc32(raw, crc32(head.subarray(RECORD_HEADER_BYTES), crc32(head.subarray(4, 8))));
  head.writeUInt32LE(crc, 8);
  return [head, raw];
}

interface BodyRecordHeader {
  name: string;
  data: Omit<WebhookJobData, 'rawBody' | 'rawBodyBase64' | 'event' | 'parseProblem'>;
}

/** The JSON header of an `SWR2` payload, or null when it is not one. */
function bodyPayloadHeader(payload: Buffer): BodyRecordHeader | null {
  if (payload.length < 4) return null;
  const headerLength = payload.readUInt32LE(0);
  if (4 + headerLength > payload.length) return null;
  const header = JSON.parse(payload.toString('utf8', 4, 4 + headerLength)) as BodyRecordHeader;
  if (typeof header?.name !== 'string' || typeof header.data !== 'object' || header.data === null) return null;
  return header;
}

/** The job of an `SWR2` payload: the header's fields, and those the listener derived from the body. */
function decodeBodyPayload(payload: Buffer, header: BodyRecordHeader): WebhookJob {
  // A copy: the job must not keep the whole segment's buffer alive.
  const raw = Buffer.from(payload.subarray(4 + payload.readUInt32LE(0)));
  const parsed = parseDelivery(raw, header.data.contentType ?? undefined);
  const data: WebhookJobData = {
    ...header.data,
    ...rawBodyFields(raw),
    event: parsed.event,
    parseProblem: parsed.problem,
  };
  return { name: header.name, data };
}

export interface ScannedRecord {
  /** Offset of the record's first byte in the segment. */
  offset: number;
  /** Offset just past the record. */
  end: number;
  /** The delivery's `receivedAt`. */
  receivedAt: string;
  /**
   * The job, decoded from the segment's bytes at each read (for an `SWR2` record, its body string and event are
   * derived then): a segment's records are not all held decoded at once, only the batch being sent.
   */
  readonly job: WebhookJob;
}

interface ScanResult {
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
  if (pos + RECORD_HEADER_BYTES > buf.length) return null;
  const magic = buf.readUInt32LE(pos);
  if (magic !== RECORD_MAGIC && magic !== BODY_RECORD_MAGIC) return null;
  const length = buf.readUInt32LE(pos + 4);
  const end = pos + RECORD_HEADER_BYTES + length;
  if (length > MAX_RECORD_BYTES || end > buf.length) return null;
  const payload = buf.subarray(pos + RECORD_HEADER_BYTES, end);
  if (crc32(payload, crc32(buf.subarray(pos + 4, pos + 8))) !== buf.readUInt32LE(pos + 8)) return null;
  try {
    if (magic === BODY_RECORD_MAGIC) {
      const header = bodyPayloadHeader(payload);
      if (header === null) return null;
      return {
        offset: pos,
        end,
        receivedAt: header.data.receivedAt,
        get job() {
          return decodeBodyPayload(payload, header);
        },
      };
    }
    const job = JSON.parse(payload.toString('utf8')) as WebhookJob;
    if (typeof job?.name !== 'string' || typeof job.data !== 'object' || job.data === null) return null;
    return { offset: pos, end, receivedAt: job.data.receivedAt, job };
  } catch {
    return null;
  }
}

const MAGICS = [RECORD_MAGIC, BODY_RECORD_MAGIC].map((magic) => {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(magic, 0);
  return bytes;
});

/** The next offset where either kind of record could start. */
function nextMagic(buf: Buffer, from: number): number {
  let next = buf.length;
  for (const magic of MAGICS) {
    const found = buf.indexOf(magic, from);
    if (found !== -1 && found < next) next = found;
  }
  return next;
}
