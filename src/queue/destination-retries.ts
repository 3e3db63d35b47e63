/**
 * The retry jobs of the fan-out (src/handlers/destinations.ts): a destination that did not take an event gets a job
 * of its own on the ingest queue, so that its attempts, backoff and dead letter are its own and the other
 * destinations never wait for it nor get the event again.
 *
 * The job: the delivery's data with `onlyDestination` and `destinationRetry`, id `<deliveryId>-to-<name>` (a fan-out
 * run again after a crash adds no second one: BullMQ ignores an add whose id exists), the ingest queue's attempts,
 * backoff and retention. It starts after the first backoff, or at the breaker's next probe when the breaker is open.
 *
 * With `RECORD_ORDER=latest` it is also deduplicated on `<record>-to-<name>` with BullMQ's `keepLastIfActive`, as
 * record jobs are: one retry job per record and destination at a time. While one is pending (its deduplication key
 * exists: waiting, delayed or active), the fan-out hands that record's later events for that destination to it
 * (`pending`) instead of sending them, and the job sends the newest of them (`latest`, kept per record and
 * destination as src/queue/latest.ts keeps it per record): the destination never gets two events of a record at
 * once, nor an older one after a newer.
 */
import type { Queue } from 'bullmq';
import type { RedisClient } from './connection.ts';
import type { WebhookJobData } from './contract.ts';
import { type Latest, LatestDeliveries, latestTtlMs } from './latest.ts';
import { type BullmqProducerOptions, jobOptionsOf } from './producer-options.ts';
import { recordKeyOf } from './records.ts';

export interface DestinationRetries {
  /** Adds the destination's retry job (none when it exists); `delayMs` null: after the first backoff. */
  add(jobName: string, data: WebhookJobData, destination: string, delayMs: number | null): Promise<void>;
  /** The destinations that have a retry job of this delivery's record pending (`RECORD_ORDER=latest`; else none). */
  pending(data: WebhookJobData, destinations: readonly string[]): Promise<Set<string>>;
  /** The newest delivery of this record handed to the destination's retry job (`RECORD_ORDER=latest`; else null). */
  latest(data: WebhookJobData, destination: string): Promise<Latest | null>;
}

type Options = Pick<BullmqProducerOptions, 'jobs' | 'dedupWindowSeconds'>;

export class QueueDestinationRetries implements DestinationRetries {
  private readonly latestOf: LatestDeliveries | null;

  constructor(
    private readonly queue: Queue<WebhookJobData>,
    client: RedisClient,
    private readonly opts: Options,
    /** `RECORD_ORDER=latest` */
    ordered: boolean,
  ) {
    const base = `${queue.opts.prefix ?? 'bull'}:${queue.name}:destination-retries`;
    this.latestOf = ordered ? new LatestDeliveries(client, base, latestTtlMs(opts)) : null;
  }

  private keyOf(data: WebhookJobData, destination: string): string | null {
    const record = this.latestOf === null ? null : recordKeyOf(data);
    return record === null ? null : `${record}-to-${destination}`;
  }

  async add(jobName: string, data: WebhookJobData, destination: string, delayMs: number | null): Promise<void> {
    const key = this.keyOf(data, destination);
    if (key !== null) await this.latestOf?.offer(key, jobName, data);
    const delay = delayMs ?? this.opts.jobs.backoffMs;
    await this.queue.add(
      jobName,
      { ...data, onlyDestination: destination, destinationRetry: true },
      {
        ...jobOptionsOf(this.opts),
        jobId: `${data.deliveryId}-to-${destination}`,
        ...(delay > 0 ? { delay } : {}),
        ...(key === null ? {} : { deduplication: { id: key, keepLastIfActive: true } }),
      },
    );
  }

  async pending(data: WebhookJobData, destinations: readonly string[]): Promise<Set<string>> {
    const keys = destinations.map((d) => this.keyOf(data, d));
    const held = await Promise.all(keys.map((k) => (k === null ? null : this.queue.getDeduplicationJobId(k))));
    return new Set(destinations.filter((_, i) => held[i] != null));
  }

  async latest(data: WebhookJobData, destination: string): Promise<Latest | null> {
    const key = this.keyOf(data, destination);
    return key === null ? null : ((await this.latestOf?.get(key)) ?? null);
  }
}
