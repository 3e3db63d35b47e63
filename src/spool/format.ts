/**
 * On-disk format of the spool: append-only segment files of self-checking entries.
 *
 * A segment file (`segment-<16-digit sequence>.log`) is an 8-byte file header, the ASCII `SWSPOOL1`, followed by
 * entries, each:
 *
 *   offset 0  u32 LE  magic 0x31525753 (the ASCII bytes `SWR1`)
 *   offset 4  u32 LE  payload length in bytes (at most MAX_ENTRY_BYTES)
 *   offset 8  u32 LE  CRC-32 (zlib) of the 4 length bytes followed by the payload
 *   offset 12 payload: UTF-8 JSON `{"name": <job name>, "data": <WebhookJobData>}` (the queue contract)
 *
 * or, for a job the listener built from a body (most entries, and the only large ones), an entry of about the size
 * of that body:
 *
 *   offset 0  u32 LE  magic 0x32525753 (the ASCII bytes `SWR2`)
 *   offset 4  u32 LE  payload length in bytes (at most MAX_ENTRY_BYTES)
 *   offset 8  u32 LE  CRC-32 (zlib) of the 4 length bytes followed by the payload
 *   offset 12 payload: u32 LE length H of a UTF-8 JSON header `{"name", "data"}`, where `data` is the job's data
 *             without `rawBody`, `rawBodyBase64`, `event` and `parseProblem`; then the body's bytes, exactly as received.
 *
 * Reading an `SWR2` entry derives the missing fields from the bytes as the listener did (`rawBodyFields`, then
 * `parseDelivery` with the entry's `contentType`; both are deterministic), so the job drained equals the job that
 * was spooled. Both kinds are read; entries are written as `SWR2` when the job carries its body's bytes (see
 * `bindRawBody` in the queue contract), as `SWR1` otherwise.
 *
 * An entry is valid only when its magic, length and checksum agree. A crash while appending leaves at most a torn
 * entry at the end of the segment being written: `scanEntries` reports it (`tornBytes`) and the spool truncates it
 * away on open, so it is never replayed. A damaged entry elsewhere (`corruptBytes`) is skipped by searching for the
 * next valid entry, and the segment is kept for inspection (`*.corrupt`) instead of being deleted once drained.
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
const ENTRY_MAGIC = 0x31525753;
/** `SWR2`: a small JSON header, then the body's bytes. */
const BODY_ENTRY_MAGIC = 0x32525753;
export const ENTRY_HEADER_BYTES = 12;
/** Far above any delivery (BODY_LIMIT_BYTES is at most 64 MiB, and the JSON at most ~3× that when escaped). */
export const MAX_ENTRY_BYTES = 256 * 1024 * 1024;

export function encodeEntry(job: WebhookJob): Buffer {
  const parts = encodeEntryParts(job);
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
}

/**
 * An entry as the buffers to write one after the other: for an `SWR2` entry, its header and the body's own bytes
 * (not copied, so a spooled body exists once in memory while it is written).
 */
export function encodeEntryParts(job: WebhookJob): Buffer[] {
  const raw = boundRawBody(job.data);
  if (raw !== undefined) return encodeBodyEntry(job, raw);
  const payload = Buffer.from(JSON.stringify({ name: job.name, data: job.data }), 'utf8');
  const entry = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + payload.length);
  entry.writeUInt32LE(ENTRY_MAGIC, 0);
  entry.writeUInt32LE(payload.length, 4);
  entry.writeUInt32LE(crc32(payload, crc32(entry.subarray(4, 8))), 8);
  payload.copy(entry, ENTRY_HEADER_BYTES);
  return [entry];
}

/** The fields an `SWR2` entry derives from the body instead of storing. */
const DERIVED_FIELDS = new Set(['rawBody', 'rawBodyBase64', 'event', 'parseProblem']);

function encodeBodyEntry(job: WebhookJob, raw: Buffer): Buffer[] {
  // Copied key by key: the derived fields may be computed on read (`deriveBodyFieldsLazily`), and are not read here.
  const rest: Record<string, unknown> = {};
  for (const key of Object.keys(job.data)) {
    if (!DERIVED_FIELDS.has(key)) rest[key] = job.data[key as keyof WebhookJobData];
  }
  const json = Buffer.from(JSON.stringify({ name: job.name, data: rest }), 'utf8');
  const length = 4 + json.length + raw.length;
  const head = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + 4 + json.length);
  head.writeUInt32LE(BODY_ENTRY_MAGIC, 0);
  head.writeUInt32LE(length, 4);
  head.writeUInt32LE(json.length, ENTRY_HEADER_BYTES);
  json.copy(head, ENTRY_HEADER_BYTES + 4);
  const crc = crc32(raw, crc32(head.subarray(ENTRY_HEADER_BYTES), crc32(head.subarray(4, 8))));
  head.writeUInt32LE(crc, 8);
  return [head, raw];
}

interface BodyEntryHeader {
  name: string;
  data: Omit<WebhookJobData, 'rawBody' | 'rawBodyBase64' | 'event' | 'parseProblem'>;
}

/** The JSON header of an `SWR2` payload, or null when it is not one. */
function bodyPayloadHeader(payload: Buffer): BodyEntryHeader | null {
  if (payload.length < 4) return null;
  const headerLength = payload.readUInt32LE(0);
  if (4 + headerLength > payload.length) return null;
  const header = JSON.parse(payload.toString('utf8', 4, 4 + headerLength)) as BodyEntryHeader;
  if (typeof header?.name !== 'string' || typeof header.data !== 'object' || header.data === null) return null;
  return header;
}

/** The job of an `SWR2` payload: the header's fields, and those the listener derived from the body. */
function decodeBodyPayload(payload: Buffer, header: BodyEntryHeader): WebhookJob {
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

export interface ScannedEntry {
  /** Offset of the entry's first byte in the segment. */
  offset: number;
  /** Offset just past the entry. */
  end: number;
  /** The delivery's `receivedAt`. */
  receivedAt: string;
  /**
   * The job, decoded from the segment's bytes at each read (for an `SWR2` entry, its body string and event are
   * derived then): a segment's entries are not all held decoded at once, only the batch being sent.
   */
  readonly job: WebhookJob;
}

interface ScanResult {
  entries: ScannedEntry[];
  /** Offset past the last valid entry: where appending may resume. */
  validEnd: number;
  /** Bytes after the last valid entry that do not form one: an append cut short by a crash. */
  tornBytes: number;
  /** Bytes between valid entries that failed their checks (damage, not a crash). */
  corruptBytes: number;
  /** The file does not start with the segment header. */
  badHeader: boolean;
}

/** Reads every valid entry of a segment's bytes, from `from` (an entry boundary) on. */
export function scanEntries(buf: Buffer, from = FILE_HEADER.length): ScanResult {
  const badHeader = buf.length < FILE_HEADER.length || !buf.subarray(0, FILE_HEADER.length).equals(FILE_HEADER);
  const entries: ScannedEntry[] = [];
  let pos = Math.max(from, FILE_HEADER.length);
  let validEnd = pos;
  let corruptBytes = 0;
  while (pos < buf.length) {
    const entry = readEntryAt(buf, pos);
    if (entry !== null) {
      if (pos > validEnd) corruptBytes += pos - validEnd;
      entries.push(entry);
      pos = entry.end;
      validEnd = pos;
      continue;
    }
    // Not an entry here: look for the next magic number that starts a valid entry.
    pos = nextMagic(buf, pos + 1);
  }
  return { entries, validEnd, tornBytes: buf.length - validEnd, corruptBytes, badHeader };
}

function readEntryAt(buf: Buffer, pos: number): ScannedEntry | null {
  if (pos + ENTRY_HEADER_BYTES > buf.length) return null;
  const magic = buf.readUInt32LE(pos);
  if (magic !== ENTRY_MAGIC && magic !== BODY_ENTRY_MAGIC) return null;
  const length = buf.readUInt32LE(pos + 4);
  const end = pos + ENTRY_HEADER_BYTES + length;
  if (length > MAX_ENTRY_BYTES || end > buf.length) return null;
  const payload = buf.subarray(pos + ENTRY_HEADER_BYTES, end);
  if (crc32(payload, crc32(buf.subarray(pos + 4, pos + 8))) !== buf.readUInt32LE(pos + 8)) return null;
  try {
    if (magic === BODY_ENTRY_MAGIC) {
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

const MAGICS = [ENTRY_MAGIC, BODY_ENTRY_MAGIC].map((magic) => {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(magic, 0);
  return bytes;
});

/** The next offset where either kind of entry could start. */
function nextMagic(buf: Buffer, from: number): number {
  let next = buf.length;
  for (const magic of MAGICS) {
    const found = buf.indexOf(magic, from);
    if (found !== -1 && found < next) next = found;
  }
  return next;
}
