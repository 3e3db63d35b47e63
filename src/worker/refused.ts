/**
 * Dead letters of deliveries the worker refused for their signature or account (`SIGNATURE_CHECK=worker`).
 *
 * In that mode the listener queues any body, so these jobs are whatever anyone posted. They are kept only
 * `BAD_SIGNATURE_KEEP_SECONDS` (not `JOB_KEEP_FAILED_SECONDS`), so a flood of them does not fill Redis for a month.
 * BullMQ cannot do it by itself: `removeOnFail` is fixed when the listener adds the job (it cannot know the verdict
 * yet), and its `age` is applied to the whole failed set each time any job fails, so a shorter age on these jobs would
 * also remove the genuine dead letters. Instead each refused job is listed in a sorted set of its own,
 * `<prefix>:<queue>:refused`, scored by the time it was refused; `sweep()` removes the listed jobs older than the
 * setting that are still dead letters (a job replayed since is left alone and dropped from the list).
 */
import type { Queue } from 'bullmq';
import type { RedisClient } from '../queue/connection.ts';

const BATCH = 500;

export class RefusedDeadLetters {
  private readonly key: string;
  private sweeping: Promise<number> | null = null;

  constructor(
    private readonly client: RedisClient,
    private readonly queue: Queue,
    private readonly keepSeconds: number,
  ) {
    this.key = `${queue.opts.prefix ?? 'bull'}:${queue.name}:refused`;
  }

  /** Lists a job that is about to fail for its signature. */
  async add(jobId: string, now = Date.now()): Promise<void> {
    await this.client.zadd(this.key, now, jobId);
  }

  async close(): Promise<void> {
    await this.sweeping?.catch(() => undefined);
    await this.queue.close();
  }

  /** Ids listed, oldest first (for tests and operators). */
  async list(): Promise<string[]> {
    return this.client.zrange(this.key, '0', '-1');
  }

  /** Removes the listed dead letters refused more than `keepSeconds` ago; resolves to how many it removed. */
  sweep(now = Date.now()): Promise<number> {
    // One sweep at a time: a burst of refusals asks for many, one pass removes what all of them would.
    this.sweeping ??= this.removeExpired(now).finally(() => {
      this.sweeping = null;
    });
    return this.sweeping;
  }

  private async removeExpired(now: number): Promise<number> {
    const cutoff = now - this.keepSeconds * 1000;
    let removed = 0;
    let skipped = 0;
    for (;;) {
      const ids = await this.client.zrangebyscore(this.key, '-inf', cutoff, 'LIMIT', String(skipped), String(BATCH));
      for (const id of ids) {
        const state = await this.queue.getJobState(id);
        // Listed before it failed: not a dead letter yet (active, or retried by hand). Looked at again next time.
        if (state === 'active' || state === 'waiting' || state === 'delayed' || state === 'prioritized') {
          skipped++;
          continue;
        }
        if (state === 'failed' && (await this.queue.remove(id)) === 1) removed++;
        await this.client.zrem(this.key, id);
      }
      if (ids.length < BATCH) return removed;
    }
  }
}
