/**
 * A private Redis Cluster on 127.0.0.1 for the tests and the benchmarks: masters and their replicas, each a
 * RedisServer in its own temporary directory, the slots spread by `redis-cli --cluster create`. Also the handle for
 * failover scenarios: kill -9 of the master of a key, the killed node brought back as a replica.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  type Address,
  DURABLE_ARGS,
  freePorts,
  infoFields,
  portIsFree,
  REPLICATION_ARGS,
  RedisServer,
  redisCommand,
} from './redis-server.ts';
import { waitFor } from './wait.ts';

const CLI_BIN = process.env.REDIS_CLI_BIN ?? 'redis-cli';

/** A node's cluster bus listens on its port + 10000, so node ports stay below 65535 - 10000. */
const MAX_NODE_PORT = 55_534;

export interface ClusterOptions {
  /** Masters, each with a share of the 16384 slots. Default 3 (the fewest Redis Cluster accepts). */
  masters?: number;
  /** Replicas of each master. Default 1. */
  replicasPerMaster?: number;
  /**
   * `cluster-node-timeout`: how long a node stays silent before the others hold it failed, which starts the
   * promotion of one of its replicas. Default 2000 ms.
   */
  nodeTimeoutMs?: number;
  /** How long start, failover and restart may take before they throw. Default 30 s. */
  timeoutMs?: number;
}

/** One line of CLUSTER NODES. */
interface ClusterNode {
  id: string;
  port: number;
  flags: string[];
  masterId: string;
  slots: string[];
}

/** Masters and replicas of one Redis Cluster; see startCluster. */
export class RedisCluster {
  /** Every node, masters and replicas, in the order they were created. */
  readonly nodes: RedisServer[] = [];

  constructor(readonly timeoutMs: number) {}

  /** Every node's address: a client's seed list. */
  get seeds(): Address[] {
    return this.nodes.map((n) => ({ host: '127.0.0.1', port: n.port }));
  }

  /** The seeds as REDIS_CLUSTER_NODES expects them: `127.0.0.1:p1,127.0.0.1:p2,...`. */
  get seedsEnv(): string {
    return this.seeds.map((s) => `${s.host}:${s.port}`).join(',');
  }

  /** The master that serves `key`'s slot, as the first running node sees it (CLUSTER KEYSLOT, CLUSTER SLOTS). */
  async masterOf(key: string): Promise<RedisServer> {
    const port = this.running()[0]?.port;
    if (port === undefined) throw new Error('no node of the cluster is running');
    return this.node(await this.slotOwnerSeenBy(port, await this.slotOf(key)));
  }

  /** The masters that serve slots, as the first running node sees them (CLUSTER NODES). */
  async masters(): Promise<RedisServer[]> {
    const port = this.running()[0]?.port;
    if (port === undefined) throw new Error('no node of the cluster is running');
    const nodes = await clusterNodes(port);
    return nodes.filter((n) => isMaster(n) && n.slots.length > 0).map((n) => this.node(n.port));
  }

  /**
   * kill -9 of the master that serves `key`: the other masters find it failed and elect its replica. Resolves with
   * the new master once every running node routes the slot to it, it answers ROLE master, and every running node
   * reports `cluster_state:ok`.
   */
  async killMasterOf(key: string): Promise<RedisServer> {
    const slot = await this.slotOf(key);
    const old = await this.masterOf(key);
    await old.kill();
    let owner: RedisServer | null = null;
    await waitFor(
      async () => {
        owner = await this.agreedOwner(slot).catch(() => null); // null: not yet, or no answer yet
        return owner !== null && owner !== old;
      },
      this.timeoutMs,
      `a replica of ${old.port} to take slot ${slot} over`,
      100,
    );
    if (!owner) throw new Error('unreachable: waitFor returned without a master');
    return owner;
  }

  /**
   * Starts a stopped node again (same directory, same nodes.conf): it finds its slots served by another node and
   * becomes that node's replica. Resolves once it is linked and every running node reports `cluster_state:ok`.
   */
  async restart(node: RedisServer): Promise<void> {
    await node.start();
    await waitFor(
      async () => {
        try {
          const info = infoFields(String(await redisCommand(node.port, ['INFO', 'replication'])));
          return info.role === 'slave' && info.master_link_status === 'up' && (await this.healthy());
        } catch {
          return false;
        }
      },
      this.timeoutMs,
      `node ${node.port} to rejoin as a replica`,
      100,
    );
  }

  /** Stops every node and removes their directories; safe to call twice and after a start that failed. */
  async destroy(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.destroy()));
  }

  /**
   * Whether every running node reports `cluster_state:ok`, knows every node, flags none of the running ones failed
   * and sees each of the running replicas attached to a master; and each running replica is linked.
   */
  async healthy(): Promise<boolean> {
    const running = new Set(this.running().map((n) => n.port));
    for (const port of running) {
      const info = infoFields(String(await redisCommand(port, ['CLUSTER', 'INFO'])));
      if (info.cluster_state !== 'ok' || Number(info.cluster_known_nodes) !== this.nodes.length) return false;
      for (const n of await clusterNodes(port)) {
        if (!running.has(n.port)) continue;
        if (n.flags.some((f) => ['fail', 'fail?', 'handshake', 'noaddr'].includes(f))) return false;
        if (!isMaster(n) && n.masterId === '-') return false;
      }
      const replication = infoFields(String(await redisCommand(port, ['INFO', 'replication'])));
      if (replication.role === 'slave' && replication.master_link_status !== 'up') return false;
    }
    return true;
  }

  /** The node that every running node routes `slot` to, once the cluster is healthy and that node is master. */
  private async agreedOwner(slot: number): Promise<RedisServer | null> {
    const owners = new Set<number>();
    for (const n of this.running()) owners.add(await this.slotOwnerSeenBy(n.port, slot));
    if (owners.size !== 1) return null;
    const owner = this.node([...owners][0] as number);
    if (!owner.process) return null;
    const role = (await redisCommand(owner.port, ['ROLE'])) as unknown[];
    return role[0] === 'master' && (await this.healthy()) ? owner : null;
  }

  private async slotOf(key: string): Promise<number> {
    const port = this.running()[0]?.port;
    if (port === undefined) throw new Error('no node of the cluster is running');
    return Number(await redisCommand(port, ['CLUSTER', 'KEYSLOT', key]));
  }

  private async slotOwnerSeenBy(port: number, slot: number): Promise<number> {
    const ranges = (await redisCommand(port, ['CLUSTER', 'SLOTS'])) as [number, number, [string, number]][];
    const range = ranges.find(([first, last]) => first <= slot && slot <= last);
    if (!range) throw new Error(`node ${port} knows no master for slot ${slot}`);
    return Number(range[2][1]);
  }

  private running(): RedisServer[] {
    return this.nodes.filter((n) => n.process !== null);
  }

  private node(port: number): RedisServer {
    const node = this.nodes.find((n) => n.port === port);
    if (!node) throw new Error(`127.0.0.1:${port} is no node of this cluster`);
    return node;
  }
}

/**
 * Starts the nodes (AOF on, as production), joins them with `redis-cli --cluster create`, and resolves once every
 * node reports `cluster_state:ok`, knows every other node, and every replica is linked to its master. On failure it
 * stops what it started and throws.
 */
export async function startCluster(options: ClusterOptions = {}): Promise<RedisCluster> {
  const masters = options.masters ?? 3;
  const replicasPerMaster = options.replicasPerMaster ?? 1;
  const cluster = new RedisCluster(options.timeoutMs ?? 30_000);
  try {
    const ports = await freePorts(
      masters * (1 + replicasPerMaster),
      async (port, chosen) =>
        port <= MAX_NODE_PORT &&
        !chosen.has(port + 10_000) &&
        !chosen.has(port - 10_000) &&
        (await portIsFree(port + 10_000)),
    );
    const args = [
      ...DURABLE_ARGS,
      ...REPLICATION_ARGS,
      ...['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'],
      ...['--cluster-node-timeout', String(options.nodeTimeoutMs ?? 2_000)],
    ];
    for (const port of ports) cluster.nodes.push(new RedisServer(port, args));
    await Promise.all(cluster.nodes.map((n) => n.start()));
    const create = ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`)];
    await promisify(execFile)(CLI_BIN, [...create, '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'], {
      timeout: cluster.timeoutMs,
    }).catch((error: Error & { stdout?: string; stderr?: string }) => {
      throw new Error(
        `${CLI_BIN} --cluster create failed: ${error.message}\n${error.stdout ?? ''}${error.stderr ?? ''}`,
      );
    });
    await waitFor(
      () => cluster.healthy().catch(() => false),
      cluster.timeoutMs,
      'every cluster node to report cluster_state:ok with its replicas linked',
      100,
    );
    return cluster;
  } catch (error) {
    await cluster.destroy();
    throw error;
  }
}

/** CLUSTER NODES as seen by the node on `port`. */
async function clusterNodes(port: number): Promise<ClusterNode[]> {
  const text = String(await redisCommand(port, ['CLUSTER', 'NODES']));
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const [id = '', address = '', flags = '', masterId = '', , , , , ...slots] = line.split(' ');
      return { id, port: Number(address.split('@')[0]?.split(':')[1]), flags: flags.split(','), masterId, slots };
    });
}

function isMaster(node: ClusterNode): boolean {
  return node.flags.includes('master');
}
