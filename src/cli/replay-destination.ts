/**
 * `sellsy-webhooks replay --destination NAME [--since TIME] [--until TIME] [--id ID]… [--name PATTERN] [--dry-run]`:
 * how a repaired or a new destination catches up, without sending anything again to the other destinations.
 *
 * What it sends to NAME, each delivery once whatever the number of places it is found in, looked for in this order:
 * - its dead letters: its own retry jobs that failed for good (src/queue/destination-retries.ts), and the failed jobs
 *   (ingest and record queue) whose event NAME takes and that NAME has not taken (the destination ledger,
 *   src/queue/destination-ledger.ts, does not say `sent`; read once per page of jobs);
 * - with `--since`, the deliveries kept since then: the completed jobs of the ingest queue (kept
 *   JOB_KEEP_COMPLETED_SECONDS) whose event NAME takes;
 * - with `--since` and the PostgreSQL store configured (DATABASE_URL), the deliveries stored since then
 *   (src/handlers/postgres-deliveries.ts), oldest first, page by page: what is older than the kept jobs.
 * `--since`/`--until` bound the time the job finished (failed or completed), or the row was stored.
 * Redis's jobs come first: their data is whole (a row has no `request`), and only their delivery ids are remembered to
 * skip the rows already sent. The memory: what Redis keeps of them, and one page of rows, whatever the size of the
 * store.
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
import { openStoredDeliveries } from '../handlers/postgres-deliveries.ts';
import { connectOrFail } from '../queue/connection.ts';
import type { WebhookJobData } from '../queue/contract.ts';
import { entriesFor } from '../queue/destination-ledger.ts';
import { sendsDeadLetter } from '../queue/destination-status.ts';
import { jobOptionsOf } from '../queue/producer-options.ts';
import { recordQueueName } from '../queue/records.ts';
import { pagesOf, type ReplayFilter, type ReplayResult, selects } from './replay-filter.ts';

/** Catch-up jobs queued in one round trip. */
const SEND_PAGE = 500;

/** A delivery to send, and where it was found (the dry run's `from`). */
interface Found {
  name: string;
  data: WebhookJobData;
  from: string;
}

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
  const ledgerBase = `${config.queuePrefix}:${config.queueName}`;
  const result: ReplayResult = { matched: 0, replayed: 0, skipped: 0 };
  // One run's jobs share a stamp: a later run queues a delivery again.
  const stamp = Date.now().toString(36);
  /** The delivery ids found so far (sent, or skipped as NAME's ledger says `sent`): each is sent once. */
  const seen = new Set<string>();
  const at = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : '-');

  /** Queues a page of deliveries in one round trip (or lists them with `--dry-run`). */
  const send = async (found: Found[]) => {
    if (found.length === 0) return;
    result.matched += found.length;
    const lines = found.map((f) => `${f.data.deliveryId} ${f.name} to ${name} (${f.from})`);
    if (dryRun) {
      for (const line of lines) out(`would send ${line}`);
      return;
    }
    try {
      await ingest.addBulk(
        found.map((f) => ({
          name: f.name,
          data: { ...withoutRetry(f.data), onlyDestination: name },
          opts: { ...jobOptionsOf(config), jobId: `${f.data.deliveryId}-to-${name}-${stamp}` },
        })),
      );
      result.replayed += found.length;
      for (const line of lines) out(`queued ${line}`);
    } catch (err) {
      result.skipped += found.length;
      for (const f of found) out(`skipped ${f.data.deliveryId}: ${(err as Error).message}`);
    }
  };
  /**
   * A delivery found (a job, or a stored row as one): whether NAME gets it, not found before. A job for one
   * destination only (a retry job, a catch-up) counts for that destination alone, and only as a dead letter
   * (`ownToo`).
   */
  const takes = (
    job: {
      id?: string | undefined;
      name: string;
      finishedOn?: number | undefined;
      data?: Pick<WebhookJobData, 'deliveryId' | 'onlyDestination'>;
    },
    ownToo = false,
  ) =>
    job.data?.deliveryId !== undefined &&
    (ownToo || job.data.onlyDestination === undefined) &&
    // The rule `stats` and the dashboard count NAME's dead letters by (src/queue/destination-status.ts).
    sendsDeadLetter(destination, job) &&
    !seen.has(job.data.deliveryId) &&
    selects(filter, job);

  try {
    // Redis's jobs are all found before any is queued: catch-up jobs that finish meanwhile would shift the positions
    // the failed and completed sets are read by.
    const kept: Found[] = [];
    for (const queue of [ingest, records]) {
      for await (const page of pagesOf(queue, 'failed')) {
        const candidates: Job<WebhookJobData>[] = [];
        for (const job of page) {
          if (!takes(job, true)) continue;
          seen.add(job.data.deliveryId);
          candidates.push(job);
        }
        // The ledger says which destinations took it; with one destination there is none, and the dead letter is its.
        const entries = await entriesFor(
          connection,
          ledgerBase,
          candidates.map((job) => job.data.deliveryId),
          name,
        );
        candidates.forEach((job, i) => {
          if (entries[i] === 'sent') return;
          const from = `dead letter ${queue.name} ${job.id}, failed ${at(job.finishedOn)}`;
          kept.push({ name: job.name, data: job.data, from });
        });
      }
    }
    if (filter.since !== null) {
      for await (const page of pagesOf(ingest, 'completed')) {
        for (const job of page) {
          if (!takes(job)) continue;
          seen.add(job.data.deliveryId);
          const from = `kept job ${ingest.name} ${job.id}, finished ${at(job.finishedOn)}`;
          kept.push({ name: job.name, data: job.data, from });
        }
      }
    }
    for (let i = 0; i < kept.length; i += SEND_PAGE) await send(kept.slice(i, i + SEND_PAGE));
    if (filter.since !== null && config.postgres !== null) {
      const store = await openStoredDeliveries(config.postgres);
      try {
        const window = { since: filter.since, until: filter.until, ids: filter.ids };
        for await (const page of store.pages(window)) {
          const found: Found[] = [];
          for (const row of page) {
            const data = { deliveryId: row.deliveryId };
            const job = { id: row.deliveryId, name: row.name, finishedOn: row.storedAt.getTime(), data };
            if (!takes(job)) continue;
            if (row.data === null) {
              result.skipped++;
              out(`skipped ${row.deliveryId} ${row.name}: ${row.problem}`);
              continue;
            }
            found.push({
              name: row.name,
              data: row.data,
              from: `postgres ${config.postgres.schema}.sellsy_events, stored ${row.storedAt.toISOString()}`,
            });
          }
          await send(found);
        }
      } finally {
        await store.close();
      }
    }
  } finally {
    await ingest.close();
    await records.close();
    connection.disconnect();
  }
  return result;
}

/** A catch-up sends this very delivery, not a record's latest as a retry job may (`destinationRetry`). */
function withoutRetry(data: WebhookJobData): WebhookJobData {
  const { destinationRetry: _, ...rest } = data;
  return rest;
}
