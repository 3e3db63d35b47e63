/**
 * The producer the listener uses: Redis first, the local spool when Redis cannot confirm in time, then a drain that
 * moves spooled deliveries into the queue once Redis answers again.
 *
 * Guarantee: `enqueue` resolves once the delivery is durable — in Redis (within `ACK_BUDGET_MS`), or fsynced in the
 * spool — and rejects with `EnqueueError` (`spool_full`, `spool_error`) only when both failed. A delivery spooled
 * after its Redis write timed out may still land in Redis through that write; the drain then writes it again with
 * the same job id and deduplication id, which Redis answers as a duplicate: one job either way.
 */
import type { Logger } from 'pino';
import { EnqueueError, SpoolError } from '../errors.ts';
import type { WebhookJob } from '../queue/contract.ts';
import type { BullmqProducer, EnqueueResult, Producer, RedisHealth } from '../queue/producer.ts';
import type { Spool, SpoolStatus } from './spool.ts';

export interface SpoolingProducerOptions {
  /** How long a delivery waits for Redis before it goes to the spool (`ACK_BUDGET_MS`). */
  ackBudgetMs: number;
  /** Spooled deliveries written to Redis per pipeline while draining. Default 100. */
  drainBatch?: number;
  /** How often the drain checks for work. Default 250 ms. */
  drainIntervalMs?: number;
  logger?: Logger;
  /** Called after each drain pass that moved deliveries. */
  onDrained?: (counts: DrainCounts) => void;
}

/**
 * `queued`: the job now in Redis is this delivery's (new, or written by Redis late after its ack budget ran out:
 * same job id); `duplicate`: an earlier delivery with the same bytes had a job already.
 */
export interface DrainCounts {
  queued: number;
  duplicate: number;
}

/** Moves every spooled delivery into the queue, oldest first. Rejects if Redis fails on the way. */
export async function drainSpool(
  spool: Spool,
  queue: BullmqProducer,
  batchSize = 100,
  onBatch?: (counts: DrainCounts) => void,
): Promise<DrainCounts> {
  const counts = { queued: 0, duplicate: 0 };
  await spool.drain(async (jobs) => {
    const results = await Promise.all(jobs.map((job) => queue.enqueue(job)));
    for (const result of results) counts[result.duplicate ? 'duplicate' : 'queued']++;
    onBatch?.(counts);
  }, batchSize);
  return counts;
}

export class SpoolingProducer implements Producer {
  private draining: Promise<void> | null = null;
  private closed = false;
  private readonly timer: NodeJS.Timeout;
  private lastDrainError: string | null = null;

  constructor(
    readonly queue: BullmqProducer,
    readonly spool: Spool,
    private readonly opts: SpoolingProducerOptions,
  ) {
    this.timer = setInterval(() => this.kick(), opts.drainIntervalMs ?? 250);
    this.timer.unref();
  }

  async enqueue(job: WebhookJob): Promise<EnqueueResult> {
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
      throw new EnqueueError(
        `Redis could not take the job (${reason}) and ${err.message}`,
        err.reason === 'full' ? 'spool_full' : 'spool_error',
        { cause: err },
      );
    }
    return { jobId: job.data.deliveryId, duplicate: false, spooled: true, spoolReason: reason };
  }

  /** Starts a drain pass if there is something to drain and Redis is answering. */
  kick(): void {
    if (this.draining !== null || this.closed) return;
    if (this.spool.status().depth === 0 || !this.queue.health().ready || this.queue.stalled(this.opts.ackBudgetMs)) {
      return;
    }
    this.draining = this.drainOnce().then(
      (counts) => {
        this.lastDrainError = null;
        if (counts.queued + counts.duplicate > 0) this.opts.onDrained?.(counts);
      },
      (err: Error) => {
        if (err.message !== this.lastDrainError) {
          this.opts.logger?.warn({ err: err.message }, 'spool drain stopped; it resumes when Redis answers');
        }
        this.lastDrainError = err.message;
      },
    );
    void this.draining.finally(() => {
      this.draining = null;
    });
  }

  drainOnce(): Promise<DrainCounts> {
    return drainSpool(this.spool, this.queue, this.opts.drainBatch);
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

  spoolStatus(): SpoolStatus {
    return this.spool.status();
  }

  ping(): Promise<boolean> {
    return this.queue.ping();
  }

  /** Stops the drain; if Redis is answering, one last pass first, so that a clean stop leaves the spool empty. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.draining;
    if (this.spool.status().depth > 0 && this.queue.health().ready && !this.queue.stalled(this.opts.ackBudgetMs)) {
      await this.drainOnce().catch(() => undefined);
    }
    await this.spool.close();
    await this.queue.close();
  }
}
