/**
 * Steady load for fault tests: requests started at a fixed rate (open loop, each on its own), unique bodies, every
 * answer recorded with its latency. Bounded by count; never targets anything but the given loopback URL.
 */
import type { Queue } from 'bullmq';
import { nearestRank } from '../../benchmarks/lib/stats.ts';

export interface Answer {
  i: number;
  status: number;
  ms: number;
  body: Record<string, unknown>;
  /** Network error (connection refused or reset): no answer. */
  error?: string;
}

export function deliveryBody(i: number, tag = 'load'): string {
  return `{"relatedtype":"invoice","event":"step","relatedid":"${tag}-${i}","corpid":"929"}`;
}

/** Starts `count` requests at `ratePerSecond`, waits for every answer. `onSent(i)` runs after each start. */
export async function steadyLoad(
  url: string,
  count: number,
  ratePerSecond: number,
  options: { tag?: string; onSent?: (i: number) => void; timeoutMs?: number } = {},
): Promise<Answer[]> {
  const interval = 1000 / ratePerSecond;
  const started = performance.now();
  const pending: Promise<Answer>[] = [];
  for (let i = 0; i < count; i++) {
    const due = started + i * interval;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(send(url, i, deliveryBody(i, options.tag), options.timeoutMs ?? 10_000));
    options.onSent?.(i);
  }
  return Promise.all(pending);
}

async function send(url: string, i: number, body: string, timeoutMs: number): Promise<Answer> {
  const t0 = performance.now();
  try {
    const response = await fetch(`${url}/webhook/sellsy`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json' },
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    return { i, status: response.status, ms: performance.now() - t0, body: text ? JSON.parse(text) : {} };
  } catch (err) {
    return { i, status: 0, ms: performance.now() - t0, body: {}, error: (err as Error).message };
  }
}

/** The nearest-rank percentile `p` (0–100) of `values`, as the benchmarks compute it. */
export function percentile(values: number[], p: number): number {
  return nearestRank(
    [...values].sort((a, b) => a - b),
    p / 100,
  );
}

/** Every job in the queue, whatever its state. */
export async function allJobs(queue: Queue) {
  return queue.getJobs(['waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized']);
}

/**
 * The zero-loss check: each delivery answered 200 is exactly one job, and no delivery made two jobs. With
 * ACK_WRITE=inbox the jobs are made after the answers (and, after a kill -9, once the dead mover's lease expired):
 * waits up to `waitMs` for every answered delivery to have its job (the answer's `jobId`, else its `deliveryId`).
 * Returns the number of jobs.
 */
export async function assertOneJobPerDelivery(
  queue: Queue,
  answers: Answer[],
  fail: (message: string) => never,
  waitMs = 20_000,
) {
  const ok = answers.filter((a) => a.status === 200);
  const deadline = Date.now() + waitMs;
  for (;;) {
    const jobs = await allJobs(queue);
    const ids = new Set(jobs.map((job) => job.id));
    const missing = ok.filter((a) => !ids.has((a.body.jobId ?? a.body.deliveryId) as string));
    if (missing.length > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      continue;
    }
    const byRelatedId = new Map<string, number>();
    for (const job of jobs) {
      const related = String(job.data.event?.relatedId ?? job.data.rawBody);
      byRelatedId.set(related, (byRelatedId.get(related) ?? 0) + 1);
    }
    const duplicated = [...byRelatedId].filter(([, n]) => n > 1);
    if (duplicated.length > 0) fail(`${duplicated.length} deliveries made more than one job: ${duplicated[0]?.[0]}`);
    if (missing.length > 0) fail(`${missing.length} deliveries answered 200 have no job (first: #${missing[0]?.i})`);
    return jobs.length;
  }
}
