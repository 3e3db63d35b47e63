/**
 * The record queue (`RECORD_ORDER=latest`): `<QUEUE_NAME>-records`, one job per Sellsy record at a time. Named here,
 * apart from the worker, so that the listener, the metrics and the operator commands can name it without loading
 * the worker and its handlers.
 */
import { hash } from 'node:crypto';
import { type Job, type JobsOptions, Queue } from 'bullmq';
import type { Config } from '../config/config.ts';
import { collectionOf } from '../sellsy/api.ts';
import type { RedisClient } from './connection.ts';
import type { WebhookJob, WebhookJobData } from './contract.ts';
import { LatestDeliveries, latestTtlMs } from './latest.ts';
import { type BullmqProducerOptions, jobOptionsOf } from './producer-options.ts';

export const recordQueueName = (queueName: string): string => `${queueName}-records`;

/**
 * The record a delivery is about, or null (unparsed, or no related id): account, Sellsy collection and id. A company
 * posted as `third`, `client`, `prospect` or `company` (and a reconciled one) is one record: `companies`. A related
 * type without a collection keys on itself, lower-cased.
 */
export function recordKeyOf(data: WebhookJobData): string | null {
  const e = data.event;
  if (!e?.relatedType || !e.relatedId) return null;
  return recordKey(data.account, collectionOf(e.relatedType) ?? e.relatedType.toLowerCase(), e.relatedId);
}

/** The record key of an object of a Sellsy collection (or of a related type without one), by id. */
export function recordKey(account: string | null, collection: string, id: string): string {
  const key = `${account ?? ''}:${collection}:${id}`;
  return key.length <= 200 ? key : hash('sha256', key, 'hex');
}

/**
 * The options of a record job: the ingest queue's retries and retention, deduplicated on the record with BullMQ's
 * `keepLastIfActive` (while the record's job waits, a later delivery takes its place; while it runs, one more waits).
 * The worker and `replay` add record jobs with these, so that both keep the one-job-per-record rule.
 */
export function recordJobOptions(
  config: Pick<BullmqProducerOptions, 'jobs'>,
  record: string | null,
  jobId: string,
): JobsOptions {
  return {
    ...jobOptionsOf(config),
    jobId,
    ...(record === null ? {} : { deduplication: { id: record, keepLastIfActive: true } }),
  };
}

/**
 * A delivery the ingest queue folded as a duplicate still makes its record run again. Sellsy bodies name the record
 * and a timestamp in seconds, not its state: two changes of one record within a second send identical bytes, and
 * the second one is folded. Its record's run may already be over, having fetched the first state; so the folded
 * delivery is offered as the record's latest delivery (its own id and receipt time) and a record job is added
 * (deduplicated as the worker's): a waiting job takes it in, a running one gets one more run, a finished one runs
 * again. The new run forwards under the folded delivery's id, so a receiver that deduplicates on `webhook-id`
 * takes the new state.
 *
 * Only for a record the delivery stage of a `RECORD_ORDER=latest` worker has offered (its latest-delivery hash
 * exists): with `RECORD_ORDER=off` there is no record stage, and a record whose first delivery has not reached the
 * delivery stage yet gets its run from that delivery, which starts after the folded one arrived.
 */
export class RecordReruns {
  private readonly latest: LatestDeliveries;
  private queue: Queue<WebhookJobData> | null = null;

  constructor(
    private readonly client: RedisClient,
    private readonly opts: Pick<BullmqProducerOptions, 'queueName' | 'prefix' | 'jobs' | 'dedupWindowSeconds'>,
  ) {
    const ttlMs = latestTtlMs({ jobs: opts.jobs, dedupWindowSeconds: opts.dedupWindowSeconds });
    this.latest = new LatestDeliveries(client, `${opts.prefix}:${recordQueueName(opts.queueName)}`, ttlMs);
  }

  /** Schedules one more run of the folded delivery's record; false when its record is not tracked (or it has none). */
  async folded(job: WebhookJob): Promise<boolean> {
    const record = recordKeyOf(job.data);
    if (record === null) return false;
    if ((await this.latest.offer(record, job.name, job.data, { trackedOnly: true })) === 'untracked') return false;
    if (this.queue === null) {
      this.queue = new Queue<WebhookJobData>(recordQueueName(this.opts.queueName), {
        connection: this.client,
        prefix: this.opts.prefix,
      });
      this.queue.on('error', () => undefined); // the producer reports its connection's errors
    }
    await this.queue.add(job.name, job.data, recordJobOptions(this.opts, record, job.data.deliveryId));
    return true;
  }
}

/**
 * Puts a dead letter of the record queue back to wait. A failed record job released its record's deduplication key:
 * retried in place it could run beside a newer job of the same record. It is added again like the worker adds one
 * (keyed on the record), then the dead letter removed. `replay` and the dashboard's retry both go through here.
 * Throws when the job is no longer a dead letter (retried, removed or expired meanwhile).
 */
export async function requeueRecordJob(
  config: Pick<BullmqProducerOptions, 'jobs'>,
  records: Queue<WebhookJobData>,
  job: Job<WebhookJobData>,
): Promise<void> {
  const record = recordKeyOf(job.data);
  if ((await job.getState()) !== 'failed') throw new Error('no longer a dead letter');
  await records.add(
    job.name,
    job.data,
    recordJobOptions(config, record, `${job.data.deliveryId}-replay-${Date.now()}`),
  );
  await job.remove();
}

/** Whether the record queue (`RECORD_ORDER=latest`) is in use: configured so, or it has keys in Redis. */
export async function recordQueueInUse(
  config: Pick<Config, 'queueName' | 'queuePrefix' | 'worker'>,
  client: RedisClient,
): Promise<boolean> {
  if (config.worker.recordOrder === 'latest') return true;
  const base = `${config.queuePrefix}:${recordQueueName(config.queueName)}`;
  const keys = ['meta', 'events', 'wait', 'active', 'delayed', 'prioritized', 'completed', 'failed'];
  return (await client.exists(...keys.map((k) => `${base}:${k}`))) > 0;
}
