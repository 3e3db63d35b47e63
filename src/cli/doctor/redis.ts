/**
 * Redis checks: `redis` (reachable), `redis version`, `redis eviction`, `redis aof`, `redis wait-aof`, then the
 * queue checks when BullMQ can run on this server.
 */
import { RedisConnection } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../../config/config.ts';
import { connectOrFail } from '../../queue/connection.ts';
import { inspectDurability } from '../../queue/durability.ts';
import { redactUrl } from '../../redact.ts';
import { type CheckResult, describe, fail, ok, TIMEOUT_MS, warn } from './check.ts';
import { queueChecks } from './queue.ts';

export async function redisChecks(config: Config): Promise<CheckResult[]> {
  const where = redactUrl(config.redisUrl, 'REDIS_URL');
  const started = performance.now();
  let client: Redis;
  try {
    client = await connectOrFail(config, 'doctor', TIMEOUT_MS);
  } catch (err) {
    return [
      fail(
        'redis',
        `${(err as Error).message}; the Redis and queue checks were skipped`,
        `start Redis or point REDIS_URL at it (without Redis the listener can only spool deliveries and no job runs)`,
      ),
    ];
  }
  try {
    await client.ping();
    const results = [ok('redis', `${where} answers (${Math.round(performance.now() - started)} ms to connect)`)];
    const report = await inspectDurability(client, config.redisWaitAof);
    // Valkey shows both its own version and the Redis version it is compatible with, which is what BullMQ checks.
    const redisVersion = report.settings.version;
    const server =
      report.valkeyVersion !== null
        ? `Valkey ${report.valkeyVersion} (Redis ${redisVersion ?? '?'} compatible)`
        : `Redis ${redisVersion ?? '?'}`;
    const version = versionCheck(redisVersion, server);
    results.push(version);
    for (const finding of report.findings) {
      const check = finding.subject === 'eviction' ? 'redis eviction' : 'redis aof';
      results.push({
        status: finding.level,
        check,
        finding: finding.message,
        ...(finding.fix && { fix: finding.fix }),
      });
    }
    results.push(await waitAofCheck(config, client, redisVersion, server, report.settings.aofEnabled));
    // BullMQ refuses to run on a server older than its minimum.
    if (version.status !== 'fail') results.push(...(await queueChecks(config, client)));
    return results;
  } finally {
    client.disconnect();
  }
}

function versionCheck(redisVersion: string | null, server: string): CheckResult {
  const minimum = RedisConnection.minimumVersion;
  const recommended = RedisConnection.recommendedMinimumVersion;
  if (redisVersion === null) {
    return warn(
      'redis version',
      'unknown (INFO does not show redis_version)',
      `make sure it is ${recommended} or later (BullMQ needs ${minimum}, recommends ${recommended})`,
    );
  }
  if (versionBelow(redisVersion, minimum)) {
    return fail(
      'redis version',
      `${server}: BullMQ needs ${minimum} or later and refuses to run on it; the queue checks were skipped`,
      `upgrade Redis to ${recommended} or later (7.2 or later for REDIS_WAIT_AOF)`,
    );
  }
  if (versionBelow(redisVersion, recommended)) {
    return warn(
      'redis version',
      `${server}: BullMQ recommends ${recommended} or later`,
      `upgrade Redis to ${recommended} or later (7.2 or later for REDIS_WAIT_AOF)`,
    );
  }
  return ok('redis version', `${server} (BullMQ needs ${minimum}, recommends ${recommended})`);
}

async function waitAofCheck(
  config: Config,
  client: Redis,
  version: string | null,
  server: string,
  aofEnabled: boolean | null,
): Promise<CheckResult> {
  if (!config.redisWaitAof) {
    return ok('redis wait-aof', "off (REDIS_WAIT_AOF=false): a 200 does not wait for Redis's fsync");
  }
  const consequence = 'the listener queues nothing and spools every delivery';
  if (version !== null && versionBelow(version, '7.2.0')) {
    return fail(
      'redis wait-aof',
      `REDIS_WAIT_AOF=true needs WAITAOF (Redis 7.2 or later, Valkey 8 or later), and this is ${server}: ${consequence}`,
      'upgrade Redis, or set REDIS_WAIT_AOF=false (appendfsync always is the nearest guarantee on an older Redis)',
    );
  }
  if (aofEnabled === false) {
    return fail(
      'redis wait-aof',
      `REDIS_WAIT_AOF=true needs appendonly yes, and AOF is off: ${consequence}`,
      'set appendonly yes (redis-cli CONFIG SET appendonly yes, and in redis.conf), or REDIS_WAIT_AOF=false',
    );
  }
  try {
    // The producer's own probe: one local fsync, waiting at most 1 ms.
    await client.call('WAITAOF', '1', '0', '1');
  } catch (err) {
    return fail(
      'redis wait-aof',
      `REDIS_WAIT_AOF=true, and this Redis refused WAITAOF (${describe(err)}): ${consequence}`,
      'upgrade Redis (7.2 or later, Valkey 8 or later) with appendonly yes, or set REDIS_WAIT_AOF=false',
    );
  }
  return ok('redis wait-aof', 'on: a 200 waits until Redis has fsynced the job to its AOF (WAITAOF answers)');
}

/** `version` < `minimum`, comparing major.minor.patch numerically (`7.0.15` < `7.2.0`). */
export function versionBelow(version: string, minimum: string): boolean {
  const parse = (v: string) => v.split('.').map((n) => Number.parseInt(n, 10) || 0);
  const a = parse(version);
  const b = parse(minimum);
  for (let i = 0; i < 3; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x < y;
  }
  return false;
}
