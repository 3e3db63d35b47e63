/**
 * The private redis-server of the tests: the launcher the benchmarks share (benchmarks/lib/redis-server.ts), its
 * Sentinel groups and Clusters (benchmarks/lib/redis-topology.ts), plus a private Valkey for the REDIS_WAIT_AOF
 * tests. Tests never touch the machine's shared Redis.
 */
import { spawnSync } from 'node:child_process';
import { DURABLE_ARGS, freePort, RedisServer } from '../../benchmarks/lib/redis-server.ts';

export {
  assertRedisServerAvailable,
  freePort,
  RedisServer,
  startRedis,
} from '../../benchmarks/lib/redis-server.ts';
export {
  type Address,
  RedisCluster,
  SentinelGroup,
  startCluster,
  startSentinelGroup,
} from '../../benchmarks/lib/redis-topology.ts';

const VALKEY_BIN = process.env.VALKEY_SERVER_BIN ?? 'valkey-server';

/** A private Valkey 8 (Redis-compatible, with WAITAOF), AOF on, for the REDIS_WAIT_AOF tests. */
export async function startValkey(extraArgs: string[] = []): Promise<RedisServer> {
  const probe = spawnSync(VALKEY_BIN, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      `The REDIS_WAIT_AOF tests need Valkey >= 8 (WAITAOF) but cannot run "${VALKEY_BIN}". On Debian 12: ` +
        'echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/backports.list && ' +
        'apt-get update && apt-get install -t bookworm-backports valkey-server (.ci/run does this); ' +
        'or point VALKEY_SERVER_BIN at a valkey-server or Redis >= 7.2 binary.',
    );
  }
  const server = new RedisServer(await freePort(), [...DURABLE_ARGS, ...extraArgs], VALKEY_BIN);
  await server.start();
  return server;
}
