/**
 * How `Spool.drain` cuts the spooled records into batches for its sink: the bounds of a batch, read before each one so
 * that the caller can shrink them, and what the caller decides when the sink rejects a batch.
 */

import type { WebhookJob } from '../queue/contract.ts';
import type { ScannedRecord } from './format.ts';

/** Sizes the next batch; read before each batch, so that the caller can shrink it after a failure. */
export interface DrainLimits {
  records: number;
  bytes: number;
}

/**
 * What to do with a batch the sink rejected: `retry` it at once (the caller shrank `limits`), `stop` the drain
 * (the error is rethrown), or `quarantine` it (one record only: moved to the quarantine file, then skipped).
 */
export type DrainVerdict = 'retry' | 'stop' | 'quarantine';

export interface DrainOptions {
  limits?: () => DrainLimits;
  onFailure?: (jobs: WebhookJob[], bytes: number, err: unknown) => DrainVerdict | Promise<DrainVerdict>;
}

/**
 * Default batch bounds: a batch is at most this many records and this many bytes (at least one record). The bytes
 * bound is what the listener holds for a batch several times over (each record's body string, parsed event and
 * BullMQ's JSON of it): 2 MiB keeps that to tens of MB while Redis still gets a batch of small records whole, and
 * large ones one or two at a time.
 */
export const DRAIN_BATCH_RECORDS = 100;
export const DRAIN_BATCH_BYTES = 2 * 1024 * 1024;

/** `drain`'s options with their defaults; a number bounds the records of a batch (its bytes keep their default). */
export function drainSettings(options: number | DrainOptions): DrainOptions & { limits: () => DrainLimits } {
  if (typeof options === 'number') return { limits: () => ({ records: options, bytes: DRAIN_BATCH_BYTES }) };
  const limits = options.limits ?? (() => ({ records: DRAIN_BATCH_RECORDS, bytes: DRAIN_BATCH_BYTES }));
  return { limits, onFailure: options.onFailure };
}

/** The batch that starts at `records[start]`: its first record whatever its size, then as many as `limit` allows. */
export function nextBatch(
  records: ScannedRecord[],
  start: number,
  limit: DrainLimits,
): { batch: ScannedRecord[]; bytes: number } {
  const first = records[start] as ScannedRecord;
  let bytes = first.end - first.offset;
  let n = 1;
  for (; n < limit.records && start + n < records.length; n++) {
    const next = records[start + n] as ScannedRecord;
    if (bytes + next.end - next.offset > limit.bytes) break;
    bytes += next.end - next.offset;
  }
  return { batch: records.slice(start, start + n), bytes };
}
