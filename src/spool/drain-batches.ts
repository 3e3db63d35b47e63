/**
 * How `Spool.drain` cuts the spooled entries into batches for its sink: the bounds of a batch, read before each one so
 * that the caller can shrink them, and what the caller decides when the sink rejects a batch.
 */

import type { WebhookJob } from '../queue/contract.ts';
import type { ScannedEntry } from './format.ts';

/** Sizes the next batch; read before each batch, so that the caller can shrink it after a failure. */
export interface DrainLimits {
  entries: number;
  bytes: number;
}

/**
 * What to do with a batch the sink rejected: `retry` it at once (the caller shrank `limits`), `stop` the drain
 * (the error is rethrown), or `quarantine` it (one entry only: moved to the quarantine file, then skipped).
 */
export type DrainVerdict = 'retry' | 'stop' | 'quarantine';

export interface DrainOptions {
  limits?: () => DrainLimits;
  onFailure?: (jobs: WebhookJob[], bytes: number, err: unknown) => DrainVerdict | Promise<DrainVerdict>;
}

/**
 * Default batch bounds: a batch is at most this many entries and this many bytes (at least one entry). The bytes
 * bound is what the listener holds for a batch several times over (each entry's body string, parsed event and
 * BullMQ's JSON of it): 2 MiB keeps that to tens of MB while Redis still gets a batch of small entries whole, and
 * large ones one or two at a time.
 */
export const DRAIN_BATCH_ENTRIES = 100;
export const DRAIN_BATCH_BYTES = 2 * 1024 * 1024;

/** `drain`'s options with their defaults. */
export function drainSettings(options: DrainOptions): DrainOptions & { limits: () => DrainLimits } {
  const limits = options.limits ?? (() => ({ entries: DRAIN_BATCH_ENTRIES, bytes: DRAIN_BATCH_BYTES }));
  return { limits, onFailure: options.onFailure };
}

/** The batch that starts at `entries[start]`: its first entry whatever its size, then as many as `limit` allows. */
export function nextBatch(
  entries: ScannedEntry[],
  start: number,
  limit: DrainLimits,
): { batch: ScannedEntry[]; bytes: number } {
  const first = entries[start] as ScannedEntry;
  let bytes = first.end - first.offset;
  let n = 1;
  for (; n < limit.entries && start + n < entries.length; n++) {
    const next = entries[start + n] as ScannedEntry;
    if (bytes + next.end - next.offset > limit.bytes) break;
    bytes += next.end - next.offset;
  }
  return { batch: entries.slice(start, start + n), bytes };
}
