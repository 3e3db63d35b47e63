/**
 * Redis checks: `redis` (reachable), then per server (on a Cluster, per master, the check named with its address)
 * `redis version`, `redis eviction`, `redis aof`, `redis wait-aof`, `redis replicas`, then the queue checks when
 * BullMQ can run on this server.
 */
import { RedisConnection } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../../config/config.ts';
import {
  addressOf,
  connectOrFail,
  describeRedis,
  masterNodes,
  type RedisClient,
  redisSettingsOf,
} from '../../queue/connection.ts';
import { inspectNode, onlineReplicas, parseInfo } from '../../queue/durability.ts';
import { type CheckResult, describe, fail, ok, TIMEOUT_MS, warn } from './check.ts';
import { queueChecks } from './queue.ts';
import { sentinelCheck } from './sentinel.ts';

export async function redisChecks(config: Config): Promise<CheckResult[]> {
  const where = describeRedis(redisSettingsOf(config));
  const started = performance.now();
  let client: RedisClient;
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
    const nodes = masterNodes(client);
    const master = config.redis.kind === 'sentinel' ? ` (master at ${addressOf(client as Redis)})` : '';
    const served = nodes.length > 1 ? ` (${nodes.length} masters: ${nodes.map(addressOf).join(', ')})` : master;
    const results = [
      ok('redis', `${where} answers${served} (${Math.round(performance.now() - started)} ms to connect)`),
    ];
    const sentinels = await sentinelCheck(config);
    if (sentinels) results.push(sentinels);
    let runsBullmq = true;
    for (const node of nodes) {
      const named = (check: string) => (nodes.length > 1 ? `${check} ${addressOf(node)}` : check);
      const report = await inspectNode(node, config.redisWaitAof);
      // Valkey shows both its own version and the Redis version it is compatible with, which is what BullMQ checks.
      const redisVersion = report.settings.version;
      const server =
        report.valkeyVersion !== null
          ? `Valkey ${report.valkeyVersion} (Redis ${redisVersion ?? '?'} compatible)`
          : `Redis ${redisVersion ?? '?'}`;
      const version = versionCheck(redisVersion, server);
      if (version.status === 'fail') runsBullmq = false;
      results.push({ ...version, check: named(version.check) });
      for (const finding of report.findings) {
        const check = finding.subject === 'eviction' ? 'redis eviction' : 'redis aof';
        results.push({
          status: finding.level,
          check: named(check),
          finding: finding.message,
          ...(finding.fix && { fix: finding.fix }),
        });
      }
      const waitAof = await waitAofCheck(config, node, redisVersion, server, report.settings.aofEnabled);
      results.push({ ...waitAof, check: named(waitAof.check) });
      const replicas = await replicasCheck(config, node);
      results.push({ ...replicas, check: named(replicas.check) });
    }
    // BullMQ refuses to run on a server older than its minimum.
    if (runsBullmq) results.push(...(await queueChecks(config, client)));
    return results;
  } finally {
    client.disconnect();
  }
}

/**
 * `redis replicas`: the replicas connected to a master against `REDIS_WAIT_REPLICAS`. Fewer than it asks for: every
 * delivery waits for confirmations that cannot come and goes to the spool (and the drain waits too). Replicas with
 * `REDIS_WAIT_REPLICAS=0`: a failover can lose what the master confirmed last.
 */
async function replicasCheck(config: Config, node: RedisClient): Promise<CheckResult> {
  const info = parseInfo(await node.info('replication'));
  const online = onlineReplicas(info);
  const wanted = config.redisWaitReplicas;
  const count = `${online} replica${online === 1 ? '' : 's'} connected`;
  if (online < wanted) {
    return fail(
      'redis replicas',
      `${count}, and REDIS_WAIT_REPLICAS=${wanted}: no delivery can be confirmed in Redis, the listener spools every one and the spool does not drain`,
      `bring the replicas back (INFO replication on them: master_link_status), or lower REDIS_WAIT_REPLICAS`,
    );
  }
  if (wanted === 0 && online > 0) {
    return warn(
      'redis replicas',
      `${count}, and REDIS_WAIT_REPLICAS=0: a 200 is the master's word only, and a failover can lose the deliveries it confirmed last`,
      'set REDIS_WAIT_REPLICAS=1 (each 200 then waits for a replica to have the delivery)',
    );
  }
  return ok(
    'redis replicas',
    wanted === 0
      ? `${count}`
      : `${count}; a 200 waits until ${wanted} of them ha${wanted === 1 ? 's' : 've'} the delivery`,
  );
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
  client: RedisClient,
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
