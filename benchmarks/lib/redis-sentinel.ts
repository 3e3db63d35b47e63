/**
 * A private Redis Sentinel group on 127.0.0.1 for the tests and the benchmarks: one master, its replicas and three
 * Sentinels watching it, each process a RedisServer in its own temporary directory. Also the handle for failover
 * scenarios: a Sentinel-led failover, kill -9 of the master, the killed node brought back as a replica.
 */
import {
  type Address,
  DURABLE_ARGS,
  freePorts,
  infoFields,
  REPLICATION_ARGS,
  RedisServer,
  redisCommand,
} from './redis-server.ts';
import { waitFor } from './wait.ts';

export interface SentinelGroupOptions {
  /** The name the Sentinels monitor the master under. Default `mymaster`. */
  masterName?: string;
  /** Replicas of the master. Default 2. */
  replicas?: number;
  /** Sentinels, each voting; the quorum is a majority of them. Default 3. */
  sentinels?: number;
  /**
   * How long a master stays silent before a Sentinel holds it down. Default 2000 ms: a Sentinel may reconnect to a
   * newly promoted master up to a second late yet counts from the switch, so 1000 ms can find the new master down.
   */
  downAfterMs?: number;
  /**
   * Sentinel `failover-timeout`: a Sentinel that led or voted for a failover waits twice this before leading
   * another one of the same master. Default 5000 ms.
   */
  failoverTimeoutMs?: number;
  /** How long start, failover and restart may take before they throw. Default 30 s. */
  timeoutMs?: number;
}

/** One master, its replicas and the Sentinels that watch them; see startSentinelGroup. */
export class SentinelGroup {
  /** Data nodes: the first one started as master, the others as its replicas. */
  readonly nodes: RedisServer[] = [];
  /** The Sentinel processes. */
  readonly sentinelServers: RedisServer[] = [];

  constructor(
    readonly masterName: string,
    readonly timeoutMs: number,
  ) {}

  /** The Sentinels' addresses, for a client's `sentinels` option. */
  get sentinels(): Address[] {
    return this.sentinelServers.map((s) => ({ host: '127.0.0.1', port: s.port }));
  }

  /** The Sentinels as REDIS_SENTINELS expects them: `127.0.0.1:p1,127.0.0.1:p2,...`. */
  get sentinelsEnv(): string {
    return this.sentinels.map((s) => `${s.host}:${s.port}`).join(',');
  }

  /** The data node that the first Sentinel to answer names as master. */
  async master(): Promise<RedisServer> {
    let lastError: unknown = new Error('no Sentinel is running');
    for (const sentinel of this.sentinelServers) {
      try {
        return this.node(await this.masterPortSeenBy(sentinel.port));
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }

  /** The running data nodes other than the current master. */
  async replicas(): Promise<RedisServer[]> {
    const master = await this.master();
    return this.nodes.filter((n) => n !== master && n.process !== null);
  }

  /**
   * `SENTINEL FAILOVER`: a Sentinel promotes a replica at once, without a vote. Resolves with the new master once
   * every Sentinel names it, it answers ROLE master and a replica is linked to it. The old master keeps answering as
   * a master until the Sentinels turn it into a replica, some seconds later (Sentinel waits 8 s for newer configs).
   */
  async failover(): Promise<RedisServer> {
    const old = await this.master();
    await waitFor(
      async () => {
        for (const sentinel of this.sentinelServers) {
          try {
            await redisCommand(sentinel.port, ['SENTINEL', 'FAILOVER', this.masterName]);
            return true;
          } catch (error) {
            // NOGOODSLAVE (no replica fit yet) or INPROG: ask again later, never two Sentinels at once
            if ((error as Error).name === 'ReplyError') return false;
          }
        }
        return false;
      },
      this.timeoutMs,
      `a Sentinel to accept SENTINEL FAILOVER ${this.masterName}`,
      200,
    );
    return this.settle(old, 1);
  }

  /**
   * kill -9 of the current master: the Sentinels find it down, vote and promote a replica. Resolves with the new
   * master once every Sentinel names it, it answers ROLE master and a replica is linked to it.
   */
  async killMaster(): Promise<RedisServer> {
    const old = await this.master();
    await old.kill();
    return this.settle(old, 1);
  }

  /**
   * Starts a stopped data node again (same directory, same AOF) and makes it a replica of the current master, as the
   * Sentinels would in a few seconds; resolves once it is linked and every Sentinel sees it up.
   */
  async restart(node: RedisServer): Promise<void> {
    const master = await this.master();
    await node.start();
    await redisCommand(node.port, ['REPLICAOF', '127.0.0.1', master.port]);
    await waitFor(
      async () => {
        try {
          if (!(await this.linkedTo(node, master))) return false;
          for (const sentinel of this.sentinelServers) {
            const replicas = await this.replicasSeenBy(sentinel.port);
            if (!replicas.some((r) => Number(r.port) === node.port && r.flags === 'slave')) return false;
          }
          return true;
        } catch {
          return false;
        }
      },
      this.timeoutMs,
      `node ${node.port} to rejoin as a replica of ${master.port}`,
      100,
    );
  }

  /** Stops every process and removes their directories; safe to call twice and after a start that failed. */
  async destroy(): Promise<void> {
    await Promise.all([...this.sentinelServers, ...this.nodes].map((s) => s.destroy()));
  }

  /**
   * Waits until every Sentinel names the same master (other than `old`, when given), none sees it down or failing
   * over, that node answers ROLE master, and at least `minReplicas` replicas are linked to it, by their own account
   * and by every Sentinel's.
   */
  async settle(old: RedisServer | null, minReplicas: number): Promise<RedisServer> {
    let master: RedisServer | null = null;
    await waitFor(
      async () => {
        master = await this.agreedMaster(old, minReplicas).catch(() => null); // null: not yet, or no answer yet
        return master !== null;
      },
      this.timeoutMs,
      `the Sentinels to agree on a master${old ? ` other than ${old.port}` : ''} with ${minReplicas} replica(s)`,
      100,
    );
    if (!master) throw new Error('unreachable: waitFor returned without a master');
    return master;
  }

  private async agreedMaster(old: RedisServer | null, minReplicas: number): Promise<RedisServer | null> {
    const ports = new Set<number>();
    for (const sentinel of this.sentinelServers) ports.add(await this.masterPortSeenBy(sentinel.port));
    if (ports.size !== 1) return null;
    const master = this.node([...ports][0] as number);
    if (master === old) return null;
    const role = (await redisCommand(master.port, ['ROLE'])) as unknown[];
    if (role[0] !== 'master') return null;
    const linked = new Set<number>();
    for (const node of this.nodes) {
      if (node !== master && node.process && (await this.linkedTo(node, master))) linked.add(node.port);
    }
    if (linked.size < minReplicas) return null;
    // What the next failover needs: every Sentinel done with this one, and seeing a linked replica it could promote.
    for (const sentinel of this.sentinelServers) {
      const state = fields(await redisCommand(sentinel.port, ['SENTINEL', 'MASTER', this.masterName]));
      if (state.flags !== 'master') return null;
      if (Number(state['num-other-sentinels']) < this.sentinelServers.length - 1) return null;
      const replicas = await this.replicasSeenBy(sentinel.port);
      const up = replicas.filter((r) => r.flags === 'slave' && linked.has(Number(r.port)));
      if (up.length < minReplicas) return null;
    }
    return master;
  }

  private async linkedTo(node: RedisServer, master: RedisServer): Promise<boolean> {
    const info = infoFields(String(await redisCommand(node.port, ['INFO', 'replication'])));
    return info.role === 'slave' && Number(info.master_port) === master.port && info.master_link_status === 'up';
  }

  private async masterPortSeenBy(sentinelPort: number): Promise<number> {
    const reply = (await redisCommand(sentinelPort, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', this.masterName])) as
      | string[]
      | null;
    if (!reply) throw new Error(`Sentinel ${sentinelPort} knows no master named ${this.masterName}`);
    return Number(reply[1]);
  }

  private async replicasSeenBy(sentinelPort: number): Promise<Record<string, string>[]> {
    const reply = (await redisCommand(sentinelPort, ['SENTINEL', 'REPLICAS', this.masterName])) as unknown[];
    return reply.map(fields);
  }

  private node(port: number): RedisServer {
    const node = this.nodes.find((n) => n.port === port);
    if (!node) throw new Error(`the Sentinels name 127.0.0.1:${port} as master, which is no node of this group`);
    return node;
  }
}

/**
 * Starts a master (AOF on, as production), its replicas and the Sentinels (quorum: a majority), and resolves once
 * every Sentinel names the master, knows the other Sentinels and sees every replica linked. On failure it stops what
 * it started and throws.
 */
export async function startSentinelGroup(options: SentinelGroupOptions = {}): Promise<SentinelGroup> {
  const masterName = options.masterName ?? 'mymaster';
  const replicaCount = options.replicas ?? 2;
  const sentinelCount = options.sentinels ?? 3;
  const group = new SentinelGroup(masterName, options.timeoutMs ?? 30_000);
  try {
    const [masterPort, ...ports] = await freePorts(1 + replicaCount + sentinelCount);
    const dataArgs = [...DURABLE_ARGS, ...REPLICATION_ARGS];
    group.nodes.push(new RedisServer(masterPort as number, dataArgs));
    for (const port of ports.slice(0, replicaCount)) {
      group.nodes.push(new RedisServer(port, [...dataArgs, '--replicaof', '127.0.0.1', String(masterPort)]));
    }
    const config = [
      `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} ${Math.floor(sentinelCount / 2) + 1}`,
      `sentinel down-after-milliseconds ${masterName} ${options.downAfterMs ?? 2_000}`,
      `sentinel failover-timeout ${masterName} ${options.failoverTimeoutMs ?? 5_000}`,
      `sentinel parallel-syncs ${masterName} 1`,
      '',
    ].join('\n');
    for (const port of ports.slice(replicaCount)) {
      group.sentinelServers.push(new RedisServer(port, ['--sentinel'], undefined, config));
    }
    await Promise.all(group.nodes.map((n) => n.start()));
    await Promise.all(group.sentinelServers.map((s) => s.start()));
    await group.settle(null, replicaCount);
    return group;
  } catch (error) {
    await group.destroy();
    throw error;
  }
}

/** A flat RESP2 reply `[key, value, key, value, ...]` (SENTINEL MASTER, one of SENTINEL REPLICAS) as an object. */
function fields(reply: unknown): Record<string, string> {
  const list = reply as string[];
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < list.length; i += 2) out[list[i] as string] = list[i + 1] as string;
  return out;
}
