/**
 * Sustained jobs per second of a saturation burst: not the acknowledgements, but how soon every acknowledged delivery
 * exists as a job in Redis. A server that writes the job before its 200 (the listener today, naive) has them all when
 * the burst ends; one that acknowledges on a cheaper write (a local spool, a list) and makes the jobs afterwards has
 * them only later, and its jobs/s says so.
 *
 * From the end of the burst, the job count (or list length) is polled every POLL_MS until it has stopped growing for
 * STABLE_MS, holds at least one write per acknowledged delivery, and the listener's spool is empty (the settled
 * count, read by `countWrites`, equals it); the moment the final count was first seen is when the last job appeared.
 * That count includes the jobs of the requests still in flight when the burst stopped (at most one per connection),
 * so the moment is at or after the one the last acknowledged delivery became a job: jobs/s errs low, never high.
 * Bounded by `limitMs`; a count that never settles is reported as such, its jobs/s computed up to the moment the
 * wait gave up (an upper bound).
 */
import { sleep } from '../lib/processes.ts';

const POLL_MS = 5;
const STABLE_MS = 500;

/** What the count does once the burst is over. */
export interface Sustained {
  /** Writes in Redis when the burst started (the warm-up's, settled). */
  before: number;
  /** Writes the burst added, once settled (≥ its acknowledgements; up to one more per connection in flight). */
  added: number;
  /** Seconds from the burst's start until the final count was first seen (the last job appeared). */
  lastWriteAfterS: number;
  /** The burst's acknowledgements ÷ lastWriteAfterS. */
  writesPerS: number;
  /** False: the count had not settled within the limit (or fell short of the acknowledgements). */
  settled: boolean;
}

/** How a target's writes are counted: now (polled), and once any spool is drained (checked at the end). */
export interface WriteCounter {
  countNow(): Promise<number | null>;
  countWrites(): Promise<number | null>;
}

/**
 * Polls `target`'s writes from the end of a burst that started at `startedAt` (performance.now()) and had
 * `acknowledged` 2xx answers, over `before` writes already there. Null when the target writes nothing (bare).
 */
export async function awaitWrites(
  target: WriteCounter,
  burst: { startedAt: number; before: number; acknowledged: number },
  limitMs = 60_000,
): Promise<Sustained | null> {
  const { startedAt, before, acknowledged } = burst;
  const deadline = performance.now() + limitMs;
  const first = await target.countNow();
  if (first === null) return null;
  let count: number = first;
  let seenAt = performance.now();
  let settled = false;
  for (;;) {
    const now = performance.now();
    if (count - before >= acknowledged && now - seenAt >= STABLE_MS) {
      // Stable: anything still in a spool shows in the settled count; if so, it is a later last job.
      const drained: number = (await target.countWrites()) ?? count;
      if (drained === count) {
        settled = true;
        break;
      }
      count = drained;
      seenAt = performance.now();
      continue;
    }
    if (now > deadline) break;
    await sleep(POLL_MS);
    const again: number = (await target.countNow()) ?? count;
    if (again !== count) {
      count = again;
      seenAt = performance.now();
    }
  }
  // Unsettled: the last job, if it ever comes, appears after the moment we gave up.
  const lastWriteAfterS = ((settled ? seenAt : performance.now()) - startedAt) / 1000;
  return {
    before,
    added: count - before,
    lastWriteAfterS,
    writesPerS: acknowledged / lastWriteAfterS,
    settled: settled && count - before >= acknowledged,
  };
}
