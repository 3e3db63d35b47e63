/**
 * An in-memory twin of the queue writer (`QueueWriter`), for unit tests of what writes through it (the spooling
 * producer, the drainer) without Redis. Each write is answered as the test scripts it: taken, refused with an
 * `EnqueueError` of a given reason, or left unanswered until its deadline; `stalled` and `probeWrite` answer what the
 * test sets. Every write asked for is recorded, with its deadlines.
 */
import { EnqueueError } from '../../src/errors.ts';
import type { WebhookJob } from '../../src/queue/contract.ts';
import type { EnqueueResult, QueueWriter, RedisHealth } from '../../src/queue/writer.ts';

/**
 * How a write is answered: `answer` (taken, or folded into an earlier job with the same deduplication key),
 * `{ fail: reason }` (rejected at once with `EnqueueError(reason)`), or `hang` (no answer until the write's deadline:
 * its `silenceMs` when shorter than its `timeoutMs`; then rejected with `EnqueueError('timeout')`, as the real
 * writer does).
 */
export type WriteOutcome = 'answer' | 'hang' | { fail: EnqueueError['reason'] };

export interface WriteCall {
  job: WebhookJob;
  silenceMs: number | undefined;
  timeoutMs: number;
  /** Writes asked for in the same synchronous run share it (the drainer sends a batch's writes at once). */
  batch: number;
}

export class MemoryWriter implements QueueWriter {
  /** Every write asked for, in order, answered or not. */
  readonly calls: WriteCall[] = [];
  /** The jobs taken, by deduplication key. */
  readonly jobs = new Map<string, WebhookJob>();
  /** How each write is answered. Default: taken. */
  outcome: (job: WebhookJob) => WriteOutcome = () => 'answer';
  /** What `stalled` answers. */
  isStalled = false;
  /** What `probeWrite` answers, and how many times it was asked. */
  writable = true;
  probes = 0;
  /** What `health` and `ping` report. */
  ready = true;
  closed = false;
  private batch = 0;
  private batchOpen = false;

  constructor(readonly timeoutMs = 1_000) {}

  async enqueue(job: WebhookJob, silenceMs?: number, timeoutMs = this.timeoutMs): Promise<EnqueueResult> {
    if (!this.batchOpen) {
      this.batchOpen = true;
      this.batch++;
      queueMicrotask(() => {
        this.batchOpen = false;
      });
    }
    this.calls.push({ job, silenceMs, timeoutMs, batch: this.batch });
    if (this.closed) throw new EnqueueError('the writer is closed', 'not_connected');
    const outcome = this.outcome(job);
    if (outcome === 'hang') {
      const waitMs = silenceMs !== undefined && silenceMs < timeoutMs ? silenceMs : timeoutMs;
      await new Promise((resolve) => setTimeout(resolve, waitMs));
      throw new EnqueueError(`no answer within ${waitMs} ms`, 'timeout');
    }
    if (outcome !== 'answer') throw new EnqueueError(`the write was refused (${outcome.fail})`, outcome.fail);
    // As BullMQ answers: the same delivery again is its own job; another with the same key is folded into it.
    const earlier = this.jobs.get(job.data.dedupKey);
    if (earlier !== undefined) {
      return { jobId: earlier.data.deliveryId, duplicate: earlier.data.deliveryId !== job.data.deliveryId };
    }
    this.jobs.set(job.data.dedupKey, job);
    return { jobId: job.data.deliveryId, duplicate: false };
  }

  /** The writes asked for, batch by batch. */
  batches(): WebhookJob[][] {
    const batches = new Map<number, WebhookJob[]>();
    for (const { batch, job } of this.calls) {
      const jobs = batches.get(batch);
      if (jobs === undefined) batches.set(batch, [job]);
      else jobs.push(job);
    }
    return [...batches.values()];
  }

  stalled(): boolean {
    return this.isStalled;
  }

  async probeWrite(): Promise<boolean> {
    this.probes++;
    return this.writable;
  }

  health(): RedisHealth {
    return { status: this.ready ? 'ready' : 'reconnecting', ready: this.ready && !this.closed, lastError: null };
  }

  async ping(): Promise<boolean> {
    return this.ready && !this.closed;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
