/**
 * `sellsy api`: the client credentials of the sellsy-fetch handler obtain a token that the API accepts.
 */
import type { Config } from '../../config/config.ts';
import { PermanentError, RetryLaterError } from '../../errors.ts';
import { SellsyApi, statusOf } from '../../sellsy/api.ts';
import { type CheckResult, describe, fail, HTTP_TIMEOUT_MS, ok, warn } from './check.ts';

/**
 * The client credentials: SellsyApi asks for a token before its first call, so one look-up (invoice 0, which does
 * not exist) shows both whether Sellsy gives a token and whether the API takes it. `calls` tells which step failed:
 * it counts API calls, and stays 0 when the token request failed.
 */
export async function sellsyCheck(sellsy: NonNullable<Config['sellsyApi']>): Promise<CheckResult[]> {
  const api = new SellsyApi({ ...sellsy, timeoutMs: Math.min(sellsy.timeoutMs, HTTP_TIMEOUT_MS) });
  const credentials = 'check SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET against the API client in Sellsy';
  try {
    await api.getObject('invoice', '0');
    return [ok('sellsy api', 'client credentials accepted: a token was issued and the API answered')];
  } catch (err) {
    const message = describe(err);
    if (api.calls === 0) {
      if (err instanceof PermanentError)
        return [fail('sellsy api', message, `${credentials} (Settings › Developer portal)`)];
      if (err instanceof RetryLaterError) {
        return [warn('sellsy api', message, 'run doctor again later; the workers wait for the quota by themselves')];
      }
      return [
        warn(
          'sellsy api',
          `no token: ${message}`,
          'check SELLSY_TOKEN_URL and that this host can reach Sellsy; meanwhile sellsy-fetch jobs are retried',
        ),
      ];
    }
    const status = statusOf(err);
    if (status === 404) {
      return [ok('sellsy api', 'client credentials accepted: a token was issued and the API answered a test look-up')];
    }
    if (status === 401) {
      return [fail('sellsy api', `a token was issued, but the API refuses it: ${message}`, credentials)];
    }
    const fix =
      status === 403
        ? 'give the API client the scopes of the objects you fetch (invoices, companies…) in Sellsy'
        : 'run doctor again later; meanwhile sellsy-fetch jobs are retried';
    return [warn('sellsy api', `a token was issued, but a test look-up failed: ${message}`, fix)];
  }
}
