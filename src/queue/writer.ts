/**
 * What the listener writes deliveries with (`Producer`), and what a writer with somewhere else to put a delivery
 * needs to know of the queue (`QueueWriter`): the contracts between the listener, the spool and the BullMQ producer
 * (src/queue/producer.ts), which the spool and its tests know only through them.
 */
import type { EnqueueError } from '../errors.ts';
import type { WebhookJob } from './contract.ts';

export interface EnqueueResult {
  /** The job that holds this delivery: a new one, or the earlier one when `duplicate`. */
  jobId: string;
  /** The same delivery was already queued within the deduplication window. */
  duplicate: boolean;
  /** Written to the local spool instead (Redis down, failing or slower than the ack budget); queued later. */
  spooled?: boolean;
  /** Why it was spooled: Redis's failure, or `large` (a body too large to be confirmed within the ack budget). */
  spoolReason?: EnqueueError['reason'] | 'large';
}

export interface RedisHealth {
  /** ioredis connection status (`ready`, `connecting`, `reconnecting`, `end`, …). */
  status: string;
  /** The queue can take jobs now. */
  ready: boolean;
  lastError: string | null;
}

/**
 * Waits until `writer` can take jobs (a writer fails fast while it connects): true when ready, false once `timeoutMs`
 * has passed or `signal` aborted first. Polls every 100 ms: `health()` is a synchronous read of the connection.
 */
export async function untilReady(
  writer: { health(): RedisHealth },
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!writer.health().ready) {
    if (Date.now() >= deadline || signal?.aborted) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

export interface Producer {
  enqueue(job: WebhookJob): Promise<EnqueueResult>;
  health(): RedisHealth;
  /** A round trip to Redis, bounded by the command deadline. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * The queue as a writer with somewhere else to put a delivery sees it: writes with their own deadlines, whether Redis
 * is stuck, and whether it takes writes at all. `enqueue` rejects with `EnqueueError` (`not_connected`, `backlog`,
 * `timeout`, `redis_error`); its other rules are `BullmqProducer.enqueue`'s.
 */
export interface QueueWriter extends Producer {
  /** `ENQUEUE_TIMEOUT_MS`: the deadline of a write, unless the caller gives its own. */
  readonly timeoutMs: number;
  /** `silenceMs`: fail once Redis answered nothing for that long. `timeoutMs`: this write's deadline. */
  enqueue(job: WebhookJob, silenceMs?: number, timeoutMs?: number): Promise<EnqueueResult>;
  /** Redis has been sitting on writes for longer than `ms` without answering any. */
  stalled(ms: number): boolean;
  /** Redis takes a write now: false for a Redis that refuses every write, or does not answer in time. */
  probeWrite(): Promise<boolean>;
}
