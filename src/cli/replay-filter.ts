/**
 * What `replay` selects (src/cli/replay.ts) and what it reports, shared with the replay to one destination
 * (src/cli/replay-destination.ts).
 */
import type { Job } from 'bullmq';
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
