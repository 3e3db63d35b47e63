/**
 * The producer the listener uses: Redis first, the local spool when Redis cannot confirm in time, then a drain that
 * moves spooled deliveries into the queue once Redis answers again.
 *
 * Guarantee: `enqueue` resolves once the delivery is durable — in Redis (within `ACK_BUDGET_MS`), or fsynced in the
 * spool — and rejects with `EnqueueError` (`spool_full`, `spool_error`) only when both failed. A delivery spooled
 * after its Redis write timed out may still land in Redis through that write; the drain then writes it again with
 * the same job id and deduplication id, which Redis answers as a duplicate: one job either way.
 *
 * The drain always progresses: its batches are bounded in entries and in bytes, each batch gets a deadline that grows
 * with its size, a batch that fails is retried smaller (down to one entry), and an entry that fails alone
 * `QUARANTINE_AFTER_FAILURES` times while Redis takes other writes is moved to the spool's quarantine (kept, counted,
 * requeued by `spool drain`) instead of blocking the entries behind it. Failed passes back off exponentially. The
 * drain writes on its own Redis connection: megabytes of drained entries do not delay the live deliveries' writes,
 * nor make Redis look stalled to them.
 */
import type { Logger } from 'pino';
import { EnqueueError, SpoolError } from '../errors.ts';
import { boundRawBody, type WebhookJob } from '../queue/contract.ts';
import type { EnqueueResult, Producer, QueueWriter, RedisHealth } from '../queue/writer.ts';
import { DRAIN_BATCH_BYTES, DRAIN_BATCH_ENTRIES, type DrainLimits, type DrainVerdict } from './drain-batches.ts';
import { MAX_ENTRY_BYTES } from './format.ts';
import type { Spool } from './spool.ts';

const MiB = 1024 * 1024;
/**
 * Time a drain batch gets per MiB it holds, on top of `ENQUEUE_TIMEOUT_MS`: Redis is expected to take at least
 * 10 MiB/s of drained entries, well below what it took on a small machine (docs/benchmarks.md). Without it a batch of
 * large entries could never be confirmed in time, and the drain would send it again and again.
 */
export const DRAIN_MS_PER_MIB = 100;
/** Times an entry must fail alone, Redis taking other writes, before it is quarantined. */
export const QUARANTINE_AFTER_FAILURES = 3;
/** Longest wait between failed drain passes (the first waits `drainIntervalMs`, each next one twice as long). */
export const DRAIN_MAX_BACKOFF_MS = 10_000;

/**
 * Bytes of body per ms of `ACK_BUDGET_MS` past which a delivery goes to the spool first, without a write to Redis:
 * 256 KiB at the default 10 ms, a quarter of what Redis took in job writes within that time on a small machine
 * (docs/benchmarks.md), before BullMQ's JSON encoding (about as long again) and the other deliveries in flight. A
 * larger body cannot be confirmed within the budget once a few arrive together, and trying anyway holds its JSON and
 * Redis's command buffers in the listener's memory while the spool takes it all the same; then the drain sends it
 * again.
 */
export const LARGE_BODY_BYTES_PER_ACK_MS = 26_215;

/** The body size past which a delivery is spooled first, for an ack budget of `ackBudgetMs`. */
export function largeBodyBytes(ackBudgetMs: number): number {
  return Math.max(1, ackBudgetMs) * LARGE_BODY_BYTES_PER_ACK_MS;
}

/** The deadline of a drain batch of `bytes`. */
export function drainDeadlineMs(timeoutMs: number, bytes: number): number {
  return timeoutMs + Math.ceil(bytes / MiB) * DRAIN_MS_PER_MIB;
}

/** The command deadline of the drain's connection: that of a batch of the largest entry. */
export function drainCommandTimeoutMs(timeoutMs: number): number {
  return drainDeadlineMs(timeoutMs, MAX_ENTRY_BYTES);
}

export interface SpoolingProducerOptions {
  /** How long a delivery waits for Redis before it goes to the spool (`ACK_BUDGET_MS`). */
  ackBudgetMs: number;
  /**
   * The producer the drain writes with, on its own connection (command deadline `drainCommandTimeoutMs`). Default:
   * the listener's producer.
   */
  drainQueue?: QueueWriter;
  /** Largest drain batch. Default 100 entries and 2 MiB. */
  drainBatch?: Partial<DrainLimits>;
  /** How often the drain checks for work, and the first backoff after a failed pass. Default 250 ms. */
  drainIntervalMs?: number;
  logger?: Logger;
  /** Called after each drain pass that moved deliveries. */
  onDrained?: (counts: DrainCounts) => void;
}

/**
 * `queued`: the job now in Redis is this delivery's (new, or written by Redis late after its ack budget ran out:
 * same job id); `duplicate`: an earlier delivery with the same bytes had a job already; `quarantined`: Redis could
 * not take it, moved to the spool's quarantine.
 */
export interface DrainCounts {
  queued: number;
  duplicate: number;
  quarantined: number;
}

export interface SpoolDrainerOptions {
  batch?: Partial<DrainLimits>;
  logger?: Logger;
  /** After each confirmed batch, with the pass's counts so far. */
  onBatch?: (counts: DrainCounts) => void;
}

/**
 * Drain passes over a spool: the batch size that last worked and the failures of each entry carry over from one
 * pass to the next, so a pass that failed on an entry starts again from where the previous one left off.
 */
export class SpoolDrainer {
  private readonly max: DrainLimits;
  private limits: DrainLimits;
  /** Failures of an entry sent alone, by delivery id. */
  private readonly failures = new Map<string, number>();
  /** What every pass moved, those that stopped on an error included. */
  readonly total: DrainCounts = { queued: 0, duplicate: 0, quarantined: 0 };

  constructor(
    private readonly spool: Spool,
    private readonly queue: QueueWriter,
    private readonly opts: SpoolDrainerOptions = {},
  ) {
    this.max = { entries: DRAIN_BATCH_ENTRIES, bytes: DRAIN_BATCH_BYTES, ...opts.batch };
    this.limits = { ...this.max };
  }

  /** Moves every spooled delivery into the queue, oldest first. Rejects if Redis fails on the way. */
  async pass(): Promise<DrainCounts> {
    const counts: DrainCounts = { queued: 0, duplicate: 0, quarantined: 0 };
    await this.spool.drain(
      async (jobs, bytes) => {
        const timeoutMs = drainDeadlineMs(this.queue.timeoutMs, bytes);
        // Settled, not raced: a retry is not sent while writes of the failed batch are still being answered.
        const results = await Promise.allSettled(jobs.map((job) => this.queue.enqueue(job, undefined, timeoutMs)));
        const failed = results.find((r) => r.status === 'rejected');
        if (failed) throw failed.reason;
        for (const result of results) {
          if (result.status !== 'fulfilled') continue;
          const key = result.value.duplicate ? 'duplicate' : 'queued';
          counts[key]++;
          this.total[key]++;
        }
        for (const job of jobs) this.failures.delete(job.data.deliveryId);
        this.limits = {
          entries: Math.min(this.max.entries, this.limits.entries * 2),
          bytes: Math.min(this.max.bytes, this.limits.bytes * 2),
        };
        this.opts.onBatch?.(counts);
      },
      { limits: () => this.limits, onFailure: (jobs, bytes, err) => this.failed(jobs, bytes, err, counts) },
    );
    return counts;
  }

  private async failed(jobs: WebhookJob[], bytes: number, err: unknown, counts: DrainCounts): Promise<DrainVerdict> {
    // Redis down or stuck says nothing about the entries: wait for it (the next pass).
    if (!(err instanceof EnqueueError) || (err.reason !== 'timeout' && err.reason !== 'redis_error')) return 'stop';
    if (jobs.length > 1) {
      this.limits = { entries: Math.ceil(jobs.length / 2), bytes: Math.max(1, Math.floor(bytes / 2)) };
      return 'retry';
    }
    this.limits = { entries: 1, bytes: 1 };
    const job = jobs[0] as WebhookJob;
    const failures = (this.failures.get(job.data.deliveryId) ?? 0) + 1;
    this.failures.set(job.data.deliveryId, failures);
    if (failures < QUARANTINE_AFTER_FAILURES) return 'stop';
    // A Redis that refuses every write (out of memory, read-only) is not this entry's fault.
    if (!(await this.queue.probeWrite())) return 'stop';
    this.failures.delete(job.data.deliveryId);
    counts.quarantined++;
    this.total.quarantined++;
    this.opts.logger?.error(
      { deliveryId: job.data.deliveryId, receivedAt: job.data.receivedAt, bytes, err: err.message, failures },
      'a spooled delivery Redis cannot take was moved to the quarantine; `sellsy-webhooks spool drain` requeues it',
    );
    return 'quarantine';
  }
}

function spoolFailed(redisReason: EnqueueError['reason'], err: SpoolError): EnqueueError {
  return new EnqueueError(
    `Redis could not take the job (${redisReason}) and ${err.message}`,
    err.reason === 'full' ? 'spool_full' : 'spool_error',
    { cause: err },
  );
}

export class SpoolingProducer implements Producer {
  private draining: Promise<void> | null = null;
  private closed = false;
  private readonly timer: NodeJS.Timeout;
  private lastDrainError: string | null = null;
  private readonly drainQueue: QueueWriter;
  private readonly drainer: SpoolDrainer;
  private readonly intervalMs: number;
  private readonly largeBytes: number;
  /** No drain pass before this time (backoff after a failed one), and the current backoff. */
  private retryAt = 0;
  private backoffMs = 0;

  constructor(
    readonly queue: QueueWriter,
    readonly spool: Spool,
    private readonly opts: SpoolingProducerOptions,
  ) {
    this.drainQueue = opts.drainQueue ?? queue;
    this.drainer = new SpoolDrainer(spool, this.drainQueue, { batch: opts.drainBatch, logger: opts.logger });
    this.intervalMs = opts.drainIntervalMs ?? 250;
    this.largeBytes = largeBodyBytes(opts.ackBudgetMs);
    this.timer = setInterval(() => this.kick(), this.intervalMs);
    this.timer.unref();
  }

  async enqueue(job: WebhookJob): Promise<EnqueueResult> {
    const raw = boundRawBody(job.data);
    if (raw !== undefined && raw.length > this.largeBytes && this.spool.status().healthy) {
      // Durable in the spool within a few ms; the drain moves it to Redis a few MiB at a time.
      try {
        await this.spool.append(job);
        return { jobId: job.data.deliveryId, duplicate: false, spooled: true, spoolReason: 'large' };
      } catch (err) {
        if (!(err instanceof SpoolError)) throw err;
        // The spool failed: Redis is all that is left, and gets its whole ENQUEUE_TIMEOUT_MS.
        if (this.queue.stalled(this.opts.ackBudgetMs)) throw spoolFailed('stalled', err);
        try {
          return await this.queue.enqueue(job);
        } catch (redisErr) {
          if (!(redisErr instanceof EnqueueError)) throw redisErr;
          throw spoolFailed(redisErr.reason, err);
        }
      }
    }
    let reason: EnqueueError['reason'] = 'stalled';
    // A Redis that has not answered anything for the whole budget is not asked again: the delivery goes straight
    // to the spool instead of waiting out the budget behind it.
    if (!this.queue.stalled(this.opts.ackBudgetMs)) {
      try {
        return await this.queue.enqueue(job, this.opts.ackBudgetMs);
      } catch (err) {
        if (!(err instanceof EnqueueError)) throw err;
        reason = err.reason;
      }
    }
    try {
      await this.spool.append(job);
    } catch (err) {
      if (!(err instanceof SpoolError)) throw err;
      throw spoolFailed(reason, err);
    }
    return { jobId: job.data.deliveryId, duplicate: false, spooled: true, spoolReason: reason };
  }

  /**
   * Starts a drain pass if there is something to drain and Redis is answering; else, if drained segments are still
   * on disk (their removal or cursor write failed), a cleanup, which needs no Redis. Not before the backoff is over.
   */
  kick(): void {
    if (this.draining !== null || this.closed || Date.now() < this.retryAt) return;
    // Both connections must look alive: the drain's own has sent nothing yet when Redis freezes, and a pass started
    // then would read the spool and fill the thread pool beside the live deliveries' appends.
    const redisAnswers =
      this.drainQueue.health().ready &&
      !this.drainQueue.stalled(this.opts.ackBudgetMs) &&
      !this.queue.stalled(this.opts.ackBudgetMs);
    if (this.spool.status().depth > 0 && redisAnswers) {
      const before = { ...this.drainer.total };
      const report = () => {
        const { queued, duplicate, quarantined } = this.drainer.total;
        const counts = {
          queued: queued - before.queued,
          duplicate: duplicate - before.duplicate,
          quarantined: quarantined - before.quarantined,
        };
        if (counts.queued + counts.duplicate + counts.quarantined > 0) this.opts.onDrained?.(counts);
      };
      this.draining = this.drainOnce().then(
        () => {
          this.passed(true);
          this.lastDrainError = null;
          report();
        },
        (err: Error) => {
          this.passed(false);
          report();
          if (err.message !== this.lastDrainError) {
            this.opts.logger?.warn({ err: err.message }, 'spool drain stopped; it resumes when Redis answers');
          }
          this.lastDrainError = err.message;
        },
      );
    } else if (this.spool.cleanupPending() > 0) {
      this.draining = this.spool.cleanup().then((pending) => this.passed(pending === 0));
    } else return;
    void this.draining.finally(() => {
      this.draining = null;
    });
  }

  /** Backoff: reset by a pass that worked, doubled (capped) by one that did not. */
  private passed(ok: boolean): void {
    this.backoffMs = ok ? 0 : Math.min(DRAIN_MAX_BACKOFF_MS, Math.max(this.intervalMs, this.backoffMs * 2));
    this.retryAt = Date.now() + this.backoffMs;
  }

  async drainOnce(): Promise<DrainCounts> {
    const depth = this.spool.status().depth;
    try {
      return await this.drainer.pass();
    } finally {
      // A pass that moved entries made progress, even if it stopped later: no long wait before the next.
      if (this.spool.status().depth < depth) this.backoffMs = 0;
    }
  }

  /** Resolves once the spool is empty, or rejects after `timeoutMs`. */
  async drained(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.spool.status().depth > 0 || this.draining !== null) {
      if (Date.now() > deadline) throw new Error(`the spool still holds ${this.spool.status().depth} deliveries`);
      this.kick();
      await (this.draining ?? new Promise((resolve) => setTimeout(resolve, 50)));
    }
  }

  health(): RedisHealth {
    return this.queue.health();
  }

  ping(): Promise<boolean> {
    return this.queue.ping();
  }

  /** Stops the drain; if Redis is answering, one last pass first, so that a clean stop leaves the spool empty. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.draining;
    if (
      this.spool.status().depth > 0 &&
      this.drainQueue.health().ready &&
      !this.drainQueue.stalled(this.opts.ackBudgetMs)
    ) {
      await this.drainOnce().catch(() => undefined);
    }
    await this.spool.close();
    await this.queue.close();
    if (this.drainQueue !== this.queue) await this.drainQueue.close();
  }
}
