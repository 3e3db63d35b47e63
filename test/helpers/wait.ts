/** Waiting in tests: on a condition, polled, never for a fixed time. */
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `predicate` every `intervalMs` until it holds; throws `timed out waiting for <what>` past `timeoutMs`.
 * The timeout only bounds a failing test: a passing one waits as long as the condition takes, no longer.
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
