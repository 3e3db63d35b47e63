/**
 * `sellsy-webhooks replay --destination NAME [--since TIME] [--until TIME] [--id ID]… [--name PATTERN] [--dry-run]`:
 * how a repaired or a new destination catches up, without sending anything again to the other destinations.
 *
 * What it sends to NAME:
 * - its dead letters: its own retry jobs that failed for good (src/queue/destination-retries.ts), and the failed jobs
 *   (ingest and record queue) whose event NAME takes and that NAME has not taken (the destination ledger,
 *   src/queue/destination-ledger.ts, does not say `sent`);
 * - with `--since`, also the deliveries kept since then: the completed jobs of the ingest queue (kept
 *   JOB_KEEP_COMPLETED_SECONDS) whose event NAME takes. The PostgreSQL store is not read.
 * `--since`/`--until` bound the time the job finished (failed or completed).
 *
 * How: one catch-up job per delivery on the ingest queue, a copy of the delivery's data with `onlyDestination`
 * (src/queue/contract.ts): a worker runs `sellsy-fetch` (when on) and sends to NAME alone, with the usual attempts and
 * backoff; postgres and the user handlers do not run again. Same delivery id, so the same `webhook-id`: a destination
 * that already had the delivery deduplicates it. The dead letters stay where they are (other destinations may still
 * need them); a later plain `replay` skips NAME for those it took. Catch-up jobs are not ordered by record
 * (RECORD_ORDER=latest): every delivery is sent, in the order they are found.
 */
import { type Job, Queue } from 'bullmq';
import type { Config } from '../config/config.ts';
import { takesEvent } from '../config/destinations.ts';
import { connectOrFail } from '../queue/connection.ts';
import type { WebhookJobData } from '../queue/contract.ts';
import { jobOptionsOf } from '../queue/producer-options.ts';
import { recordQueueName } from '../queue/records.ts';
import { jobsOf, type ReplayFilter, type ReplayResult, selects } from './replay-filter.ts';

export async function replayToDestination(
  config: Config,
  name: string,
  filter: ReplayFilter,
  dryRun: boolean,
  out: (line: string) => void,
): Promise<ReplayResult> {
  const destination = config.destinations.find((d) => d.name === name);
  if (destination === undefined) {
    const known = config.destinations.map((d) => d.name).join(', ') || 'none (set DESTINATIONS_FILE or FORWARD_URL)';
    throw new Error(`--destination ${JSON.stringify(name)} is not a configured destination (configured: ${known})`);
  }
  const connection = await connectOrFail(config, 'replay', 5000);
  const ingest = new Queue<WebhookJobData>(config.queueName, { connection, prefix: config.queuePrefix });
  const records = new Queue<WebhookJobData>(recordQueueName(config.queueName), {
    connection,
    prefix: config.queuePrefix,
  });
  const ledgerBase = `${config.queuePrefix}:${config.queueName}:destinations:`;
  const result: ReplayResult = { matched: 0, replayed: 0, skipped: 0 };
  // One run's jobs share a stamp: a delivery found twice (dead letter and completed) is queued once, and a later run
  // queues it again.
  const stamp = Date.now().toString(36);
  try {
    /** By delivery id: what to send, and where it was found. */
    const chosen = new Map<string, { job: Job<WebhookJobData>; from: string }>();
    // A job for one destination only (a retry job, a catch-up) counts for that destination alone.
    const takes = (job: Job<WebhookJobData>, onlyOwn: boolean) =>
      job.data?.deliveryId !== undefined &&
      (job.data.onlyDestination === undefined || (onlyOwn && job.data.onlyDestination === name)) &&
      selects(filter, job) &&
      takesEvent(destination, job.name);

    for (const queue of [ingest, records]) {
      for await (const job of jobsOf(queue, 'failed')) {
        if (!takes(job, true) || chosen.has(job.data.deliveryId)) continue;
        // The ledger says which destinations took it; with one destination there is none, and the dead letter is its.
        const entry = await connection.hget(`${ledgerBase}${job.data.deliveryId}`, name);
        if (entry === 'sent') continue;
        chosen.set(job.data.deliveryId, { job, from: `dead letter ${queue.name} ${job.id}` });
      }
    }
    if (filter.since !== null) {
      for await (const job of jobsOf(ingest, 'completed')) {
        if (!takes(job, false) || chosen.has(job.data.deliveryId)) continue;
        chosen.set(job.data.deliveryId, { job, from: `completed ${ingest.name} ${job.id}` });
      }
    }
    for (const { job, from } of chosen.values()) {
      result.matched++;
      const finishedAt = job.finishedOn ? new Date(job.finishedOn).toISOString() : '-';
      const line = `${job.data.deliveryId} ${job.name} to ${name} (${from}, finished ${finishedAt})`;
      if (dryRun) {
        out(`would send ${line}`);
        continue;
      }
      try {
        // A catch-up sends this very delivery, not a record's latest as a retry job may.
        const { destinationRetry: _, ...data } = job.data;
        await ingest.add(
          job.name,
          { ...data, onlyDestination: name },
          { ...jobOptionsOf(config), jobId: `${job.data.deliveryId}-to-${name}-${stamp}` },
        );
        result.replayed++;
        out(`queued ${line}`);
      } catch (err) {
        result.skipped++;
        out(`skipped ${job.data.deliveryId}: ${(err as Error).message}`);
      }
    }
  } finally {
    await ingest.close();
    await records.close();
    connection.disconnect();
  }
  return result;
}
