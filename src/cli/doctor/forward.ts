/**
 * `forward url`: the receiver of the forward handler answers a HEAD (any HTTP status will do).
 */
import type { Config } from '../../config/config.ts';
import { type CheckResult, describe, HTTP_TIMEOUT_MS, ok, warn } from './check.ts';

export async function forwardCheck(forward: NonNullable<Config['forward']>): Promise<CheckResult[]> {
  // Only the origin is shown: a path or query string may hold a token of the receiver.
  let target: string;
  try {
    const url = new URL(forward.url);
    target = url.pathname === '/' && url.search === '' ? url.origin : `${url.origin}/…`;
  } catch {
    target = '(FORWARD_URL)';
  }
  const timeoutMs = Math.min(forward.timeoutMs, HTTP_TIMEOUT_MS);
  const started = performance.now();
  try {
    const response = await fetch(forward.url, {
      method: 'HEAD',
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    await response.body?.cancel();
    const ms = Math.round(performance.now() - started);
    return [ok('forward url', `${target} answered HEAD with ${response.status} in ${ms} ms`)];
  } catch (err) {
    const reason = (err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : describe(err);
    return [
      warn(
        'forward url',
        `${target} unreachable: ${reason}`,
        'check FORWARD_URL and that the receiver runs and is reachable from the workers; meanwhile forward jobs are retried, then left dead letters',
      ),
    ];
  }
}
