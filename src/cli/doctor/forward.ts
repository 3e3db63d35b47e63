/**
 * `forward url`: the receiver of the forward handler answers a HEAD (any HTTP status will do). With
 * DESTINATIONS_FILE, one such line per destination, `destination <name>`, with its circuit breaker when open.
 */
import type { Config } from '../../config/config.ts';
import type { Destination } from '../../config/destinations.ts';
import { type CheckResult, describe, HTTP_TIMEOUT_MS, ok, warn } from './check.ts';

export function forwardCheck(forward: NonNullable<Config['forward']>): Promise<CheckResult[]> {
  return urlCheck(
    'forward url',
    forward.url,
    forward.timeoutMs,
    'check FORWARD_URL and that the receiver runs and is reachable from the workers; meanwhile forward jobs are retried, then left dead letters',
  );
}

/** One line per destination of DESTINATIONS_FILE. */
export async function destinationChecks(destinations: readonly Destination[]): Promise<CheckResult[]> {
  const results = await Promise.all(
    destinations.map((d) =>
      urlCheck(
        `destination ${d.name}`,
        d.url,
        d.timeoutMs,
        `check the url of ${d.name} in DESTINATIONS_FILE and that it is reachable from the workers; meanwhile its events are retried, then left dead letters (sellsy-webhooks replay --destination ${d.name} once it is back)`,
      ),
    ),
  );
  return results.flat();
}

async function urlCheck(name: string, url: string, timeout: number, fix: string): Promise<CheckResult[]> {
  // Only the origin is shown: a path or query string may hold a token of the receiver.
  let target: string;
  try {
    const parsed = new URL(url);
    target = parsed.pathname === '/' && parsed.search === '' ? parsed.origin : `${parsed.origin}/…`;
  } catch {
    target = '(FORWARD_URL)';
  }
  const timeoutMs = Math.min(timeout, HTTP_TIMEOUT_MS);
  const started = performance.now();
  try {
    const response = await fetch(url, {
      method: 'HEAD',
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    await response.body?.cancel();
    const ms = Math.round(performance.now() - started);
    return [ok(name, `${target} answered HEAD with ${response.status} in ${ms} ms`)];
  } catch (err) {
    const reason = (err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : describe(err);
    return [warn(name, `${target} unreachable: ${reason}`, fix)];
  }
}
