/**
 * The Redis topologies the topology benchmark measures the listener on, all on 127.0.0.1 in temporary directories
 * (AOF on, as production): where the listener finds them (its environment), where its queue lives now, the CPU of
 * their processes, a reset between runs. Every process is killed at exit whatever the reason (processes.ts).
 */
import { Queue } from 'bullmq';
import { Cluster } from 'ioredis';
import { cpuSeconds } from '../lib/machine.ts';
import { removeAtExit, track } from '../lib/processes.ts';
import { rewriteAof } from '../lib/redis.ts';
import { type RedisCluster, startCluster } from '../lib/redis-cluster.ts';
import { type SentinelGroup, startSentinelGroup } from '../lib/redis-sentinel.ts';
import {
  DURABLE_ARGS,
  freePort,
  infoFields,
  REPLICATION_ARGS,
  RedisServer,
  redisCommand,
  startRedis,
} from '../lib/redis-server.ts';
import { waitFor } from '../lib/wait.ts';

export const KINDS = ['standalone', 'replica', 'sentinel', 'cluster'] as const;
export type TopologyKind = (typeof KINDS)[number];

export const LABELS: Record<TopologyKind, string> = {
  standalone: 'standalone',
  replica: 'standalone + 1 replica',
  sentinel: 'Sentinel (1+2, 3 Sentinels)',
  cluster: 'Cluster (3+3)',
};

/** The listener's queue (QUEUE_NAME, set explicitly) and, on a Cluster, the key whose master the failover kills. */
export const QUEUE = 'sellsy-webhooks';
export const CLUSTER_PREFIX = '{bull}';
export const CLUSTER_QUEUE_KEY = `${CLUSTER_PREFIX}:${QUEUE}:meta`;

/** Unused with Sentinel or a Cluster (only its user and password would be): a port nothing listens on. */
const UNUSED_URL = 'redis://127.0.0.1:1';

export interface Topology {
  kind: TopologyKind;
  /** Replicas a write can reach: the highest REDIS_WAIT_REPLICAS worth measuring. */
  replicas: number;
  /** Where the listener finds Redis, and its queue's name. */
  env(): NodeJS.ProcessEnv;
  /** The listener's queue where it lives now (the master of the moment, or the Cluster); `close` when done. */
  openQueue(): Promise<{ queue: Queue; close(): Promise<void> }>;
  /**
   * CPU seconds so far of every running Redis process (data nodes and Sentinels) and of the children they forked and
   * reaped, by pid: for a CpuMeter group.
   */
  cpu(): Map<number, number>;
  /** Empties every master and rewrites every data node's AOF. */
  reset(): Promise<void>;
  /** Has the processes started since (a restarted node) killed at exit too. */
  track(): void;
  destroy(): Promise<void>;
  /** Sentinel: the group, for its failovers. */
  group?: SentinelGroup;
  /** Cluster: the cluster, for its failovers. */
  cluster?: RedisCluster;
}

/** Starts `kind` and resolves once it is healthy (every replica linked). */
export async function startTopology(kind: TopologyKind): Promise<Topology> {
  switch (kind) {
    case 'standalone':
      return standalone(await startRedis(), null);
    case 'replica': {
      const master = await startRedis(REPLICATION_ARGS);
      const replica = new RedisServer(await freePort(), [
        ...DURABLE_ARGS,
        ...REPLICATION_ARGS,
        ...['--replicaof', '127.0.0.1', String(master.port)],
      ]);
      const topology = standalone(master, replica);
      try {
        await replica.start();
        topology.track();
        await waitFor(
          async () =>
            infoFields(String(await redisCommand(replica.port, ['INFO', 'replication']))).master_link_status === 'up',
          30_000,
          `the replica on ${replica.port} to link to ${master.port}`,
          100,
        );
      } catch (err) {
        await topology.destroy();
        throw err;
      }
      return topology;
    }
    case 'sentinel':
      return sentinel(await startSentinelGroup());
    case 'cluster':
      return cluster(await startCluster());
  }
}

function tracker(servers: () => RedisServer[]): () => void {
  return () => {
    for (const server of servers()) {
      removeAtExit(server.dir);
      if (server.process) track(server.process);
    }
  };
}

const running = (servers: RedisServer[]) => servers.filter((s) => s.process !== null);

function cpuOf(servers: RedisServer[]): Map<number, number> {
  const byPid = new Map<number, number>();
  for (const s of servers) {
    const pid = s.process?.pid;
    // With the AOF rewrites and replication syncs that Redis forks.
    if (pid !== undefined) byPid.set(pid, cpuSeconds(pid, true));
  }
  return byPid;
}

async function resetOn(masters: RedisServer[], nodes: RedisServer[]): Promise<void> {
  for (const master of masters) await redisCommand(master.port, ['FLUSHALL'], 10_000);
  for (const node of running(nodes)) await rewriteAof(node.port);
}

async function queueAt(port: number) {
  const queue = new Queue(QUEUE, { connection: { host: '127.0.0.1', port } });
  return { queue, close: () => queue.close() };
}

function standalone(master: RedisServer, replica: RedisServer | null): Topology {
  const nodes = replica ? [master, replica] : [master];
  const topology: Topology = {
    kind: replica ? 'replica' : 'standalone',
    replicas: replica ? 1 : 0,
    env: () => ({ REDIS_URL: master.url, QUEUE_NAME: QUEUE }),
    openQueue: () => queueAt(master.port),
    cpu: () => cpuOf(nodes),
    reset: () => resetOn([master], nodes),
    track: tracker(() => nodes),
    destroy: async () => {
      await Promise.all(nodes.map((n) => n.destroy()));
    },
  };
  topology.track();
  return topology;
}

function sentinel(group: SentinelGroup): Topology {
  const all = () => [...group.nodes, ...group.sentinelServers];
  const topology: Topology = {
    kind: 'sentinel',
    replicas: group.nodes.length - 1,
    env: () => ({
      REDIS_URL: UNUSED_URL,
      REDIS_SENTINELS: group.sentinelsEnv,
      REDIS_SENTINEL_MASTER: group.masterName,
      QUEUE_NAME: QUEUE,
    }),
    openQueue: async () => queueAt((await group.master()).port),
    cpu: () => cpuOf(all()),
    reset: async () => resetOn([await group.master()], group.nodes),
    track: tracker(all),
    destroy: () => group.destroy(),
    group,
  };
  topology.track();
  return topology;
}

function cluster(nodes: RedisCluster): Topology {
  const topology: Topology = {
    kind: 'cluster',
    replicas: 1,
    env: () => ({ REDIS_URL: UNUSED_URL, REDIS_CLUSTER_NODES: nodes.seedsEnv, QUEUE_NAME: QUEUE }),
    openQueue: async () => {
      const connection = new Cluster(running(nodes.nodes).map((n) => ({ host: '127.0.0.1', port: n.port })));
      const queue = new Queue(QUEUE, { connection, prefix: CLUSTER_PREFIX });
      return {
        queue,
        close: async () => {
          await queue.close();
          connection.disconnect();
        },
      };
    },
    cpu: () => cpuOf(nodes.nodes),
    reset: async () => resetOn(await nodes.masters(), nodes.nodes),
    track: tracker(() => nodes.nodes),
    destroy: () => nodes.destroy(),
    cluster: nodes,
  };
  topology.track();
  return topology;
}
