/**
 * `sellsy-webhooks replay [--id ID]… [--name PATTERN] [--since TIME] [--until TIME] [--dry-run]`: puts dead letters
 * (jobs in the failed set of the ingest queue and of the record queue) back to wait, with their attempts reset, so
 * the workers run them again. Without a filter, every failed job. `--name` takes a handler pattern (`invoice.*`);
 * `--since`/`--until` (ISO 8601) bound the time the job failed. `--dry-run` lists what it would replay.
 * `--destination NAME` sends to that destination alone, its dead letters and with `--since` the kept deliveries
 * (src/cli/replay-destination.ts).
 * Exit codes: 0 done (even when nothing matched), 1 Redis unreachable, 2 usage error.
 */
import { type Job, Queue } from 'bullmq';
import type { Config } from '../config/config.ts';
import { connectOrFail } from '../queue/connection.ts';
import type { WebhookJobData } from '../queue/contract.ts';
import { recordQueueName, requeueRecordJob } from '../queue/records.ts';
import { isPattern } from '../sellsy/payload.ts';
import { parseFlags } from './flags.ts';
import { replayToDestination } from './replay-destination.ts';
import { jobsOf, type ReplayFilter, type ReplayResult, selects } from './replay-filter.ts';

export const REPLAY_USAGE =
  'Usage: sellsy-webhooks replay [--destination NAME] [--id ID]... [--name PATTERN] [--since ISO-TIME] [--until ISO-TIME] [--dry-run]';

/** Parses the arguments; a string is a usage error to print. */
export function parseReplayArgs(args: string[]): { filter: ReplayFilter; dryRun: boolean } | string {
  const values = parseFlags(
    args,
    {
      id: { type: 'string', multiple: true },
      name: { type: 'string' },
      destination: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      'dry-run': { type: 'boolean' },
    },
    REPLAY_USAGE,
  );
  if (typeof values === 'string') return values;
  if (values.name !== undefined && !isPattern(values.name)) {
    return `--name ${JSON.stringify(values.name)} is not a pattern (use "invoice.step", "invoice.*", "*.deleted", "*" or "unknown")`;
  }
  const time = (flag: string, value: string | undefined): number | null | string => {
    if (value === undefined) return null;
    const t = Date.parse(value);
    return Number.isNaN(t)
      ? `--${flag} ${JSON.stringify(value)} is not a date (use ISO 8601, e.g. 2026-11-28T09:00:00Z)`
      : t;
  };
  const since = time('since', values.since);
  const until = time('until', values.until);
  if (typeof since === 'string') return since;
  if (typeof until === 'string') return until;
  return {
    filter: {
      ids: new Set(values.id ?? []),
      name: values.name ?? null,
      since,
      until,
      destination: values.destination ?? null,
    },
    dryRun: values['dry-run'] === true,
  };
}

export async function replay(
  config: Config,
  filter: ReplayFilter,
  dryRun: boolean,
  out: (line: string) => void,
): Promise<ReplayResult> {
  if (filter.destination) return replayToDestination(config, filter.destination, filter, dryRun, out);
  // Fails fast: an operator's command must say "unreachable", not wait for Redis forever.
  const connection = await connectOrFail(config, 'replay', 5000);
  const ingest = new Queue<WebhookJobData>(config.queueName, { connection, prefix: config.queuePrefix });
  const records = new Queue<WebhookJobData>(recordQueueName(config.queueName), {
    connection,
    prefix: config.queuePrefix,
  });
  const result: ReplayResult = { matched: 0, replayed: 0, skipped: 0 };
  try {
    for (const queue of [ingest, records]) {
      // Collected first, by id: a replayed job leaves the failed set, and jobs failing or expiring meanwhile shift
      // the positions that pages are read by.
      const chosen = new Map<string, Job<WebhookJobData>>();
      for await (const job of jobsOf(queue, 'failed')) if (job.id && selects(filter, job)) chosen.set(job.id, job);
      for (const job of chosen.values()) {
        result.matched++;
        const failedAt = job.finishedOn ? new Date(job.finishedOn).toISOString() : '-';
        const line = `${queue.name} ${job.id} ${job.name} failed ${failedAt} after ${job.attemptsMade} attempts: ${job.failedReason}`;
        if (dryRun) {
          out(`would replay ${line}`);
          continue;
        }
        try {
          if (queue === records) await requeueRecordJob(config, records, job);
          else await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
          result.replayed++;
          out(`replayed ${line}`);
        } catch (err) {
          result.skipped++;
          out(`skipped ${queue.name} ${job.id}: ${(err as Error).message}`);
        }
      }
    }
  } finally {
    await ingest.close();
    await records.close();
    connection.disconnect();
  }
  return result;
}
