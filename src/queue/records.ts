/**
 * The record queue (`RECORD_ORDER=latest`): `<QUEUE_NAME>-records`, one job per Sellsy record at a time. Named here,
 * apart from the worker, so that the listener, the metrics and the operator commands can name it without loading
 * the worker and its handlers.
 */
import { hash } from 'node:crypto';
import type { Job, JobsOptions, Queue } from 'bullmq';
import type { WebhookJobData } from './contract.ts';
import { type BullmqProducerOptions, jobOptionsOf } from './producer.ts';

export const recordQueueName = (queueName: string): string => `${queueName}-records`;

/** The record a delivery is about, or null (unparsed, or no related id). */
export function recordKeyOf(data: WebhookJobData): string | null {
  const e = data.event;
  if (!e?.relatedType || !e.relatedId) return null;
  const key = `${data.account ?? ''}:${e.relatedType}:${e.relatedId}`;
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
