/**
 * `redis sentinels` (with `REDIS_SENTINELS` only): how many of the configured Sentinels answer, whether they agree on
 * the master, and whether enough of them are reachable to authorise a failover (`SENTINEL CKQUORUM`). A group that
 * cannot fail over still serves, until its master goes.
 */
import { Redis } from 'ioredis';
import type { Config } from '../../config/config.ts';
import { sentinelOptions } from '../../queue/connection.ts';
import { type CheckResult, describe, fail, ok, TIMEOUT_MS, warn } from './check.ts';

interface SentinelAnswer {
  at: string;
  master: string | null;
  quorum: string | null;
  error: string | null;
}

export async function sentinelCheck(config: Config): Promise<CheckResult | null> {
  const settings = config.redis;
  if (settings.kind !== 'sentinel') return null;
  const answers = await Promise.all(
    settings.sentinels.map(async (address): Promise<SentinelAnswer> => {
      const at = `${address.host}:${address.port}`;
      const client = new Redis({
        ...sentinelOptions(settings, address, `${config.queueName}:doctor`),
        lazyConnect: true,
        connectTimeout: TIMEOUT_MS,
        commandTimeout: TIMEOUT_MS,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      client.on('error', () => undefined);
      try {
        await client.connect();
        const master = (await client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', settings.masterName)) as
          | string[]
          | null;
        let quorum: string | null = null;
        try {
          quorum = String(await client.call('SENTINEL', 'CKQUORUM', settings.masterName));
        } catch (err) {
          quorum = `refused: ${describe(err)}`;
        }
        return { at, master: master ? `${master[0]}:${master[1]}` : null, quorum, error: null };
      } catch (err) {
        return { at, master: null, quorum: null, error: describe(err) };
      } finally {
        client.disconnect();
      }
    }),
  );
  const answering = answers.filter((a) => a.error === null);
  const masters = new Set(answering.map((a) => a.master ?? 'none'));
  const down = answers.filter((a) => a.error !== null).map((a) => `${a.at} (${a.error})`);
  const name = `"${settings.masterName}"`;
  if (answering.length === 0) {
    return fail(
      'redis sentinels',
      `none of the ${answers.length} Sentinels answers: ${down.join(', ')}`,
      'check REDIS_SENTINELS and the Sentinels (and REDIS_SENTINEL_PASSWORD if they ask for one)',
    );
  }
  if (masters.has('none')) {
    return fail(
      'redis sentinels',
      `a Sentinel does not know the master ${name}`,
      'check REDIS_SENTINEL_MASTER against the name in sentinel.conf (sentinel monitor <name> …)',
    );
  }
  if (masters.size > 1) {
    return warn(
      'redis sentinels',
      `the Sentinels name different masters for ${name}: ${[...masters].join(', ')} (a failover under way?)`,
      'run doctor again; if it stays so, check the Sentinels’ logs and their network',
    );
  }
  const noQuorum = answering.find((a) => !a.quorum?.startsWith('OK'));
  if (noQuorum) {
    return fail(
      'redis sentinels',
      `the Sentinels could not fail ${name} over: ${noQuorum.quorum}`,
      'start the missing Sentinels (a failover needs the quorum and a majority of them)',
    );
  }
  const summary = `${answering.length} of ${answers.length} Sentinels answer; master ${name} at ${[...masters][0]}`;
  if (down.length > 0) {
    return warn(
      'redis sentinels',
      `${summary}; not answering: ${down.join(', ')}`,
      'start the Sentinels that do not answer',
    );
  }
  return ok('redis sentinels', `${summary}, failover authorised (CKQUORUM)`);
}
