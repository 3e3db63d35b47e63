/**
 * What `replay` selects (src/cli/replay.ts) and what it reports, shared with the replay to one destination
 * (src/cli/replay-destination.ts).
 */
import type { Job, Queue } from 'bullmq';
import type { WebhookJobData } from '../queue/contract.ts';
import { matches } from '../sellsy/payload.ts';

export interface ReplayFilter {
  ids: ReadonlySet<string>;
  name: string | null;
  since: number | null;
  until: number | null;
  /** `--destination`: send to this destination only (src/cli/replay-destination.ts). */
  destination?: string | null;
}

export function selects(filter: ReplayFilter, job: Pick<Job, 'id' | 'name' | 'finishedOn'>): boolean {
  if (filter.ids.size > 0 && !filter.ids.has(job.id ?? '')) return false;
  if (filter.name !== null && !matches(filter.name, job.name)) return false;
  const failedAt = job.finishedOn ?? 0;
  if (filter.since !== null && failedAt < filter.since) return false;
  if (filter.until !== null && failedAt > filter.until) return false;
  return true;
}

export interface ReplayResult {
  matched: number;
  replayed: number;
  /** Jobs that left the failed set while the replay ran (retried, removed or expired meanwhile). */
  skipped: number;
}

const PAGE = 500;

/** Every job of a set, read by pages (collected by the caller by delivery id, so shifting positions are harmless). */
export async function* jobsOf(
  queue: Queue<WebhookJobData>,
  state: 'failed' | 'completed',
): AsyncGenerator<Job<WebhookJobData>> {
  for await (const page of pagesOf(queue, state)) yield* page;
}

/** The same, a page at a time: for a caller that asks Redis something about each page's jobs in one round trip. */
export async function* pagesOf(
  queue: Queue<WebhookJobData>,
  state: 'failed' | 'completed',
): AsyncGenerator<Job<WebhookJobData>[]> {
  const total = state === 'failed' ? await queue.getFailedCount() : await queue.getCompletedCount();
  for (let start = 0; start < total + PAGE; start += PAGE) {
    const page =
      state === 'failed'
        ? await queue.getFailed(start, start + PAGE - 1)
        : await queue.getCompleted(start, start + PAGE - 1);
    const jobs = page.filter((job) => job !== undefined && job !== null);
    if (jobs.length > 0) yield jobs;
    if (page.length < PAGE) break;
  }
}
