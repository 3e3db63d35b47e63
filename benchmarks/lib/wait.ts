/** Waiting on a condition, polled, never for a fixed time: shared by the benchmarks and the tests. */
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `predicate` every `intervalMs` until it holds; throws `timed out waiting for <what>` past `timeoutMs`. A
 * predicate that throws (a child process exited, say) ends the wait with its error. The timeout only bounds a wait
 * that fails: one that succeeds waits as long as the condition takes, no longer.
 */
export async function waitFor(
  predicate: () => Promise<boolean> | boolean,
  timeoutMs: number,
  what: string,
  intervalMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}
