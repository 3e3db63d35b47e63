/**
 * Every Redis connection of the service comes from here: where Redis is (`RedisSettings`, from the configuration)
 * and what the connection is for (its role) make one ioredis client.
 *
 * Roles:
 * - `fail-fast`: the listener's producer, the spool's drain, the queue figures of a `/metrics` scrape. Never queues a
 *   command while disconnected, never waits longer than `commandTimeoutMs` for an answer, reconnects quickly: a dead
 *   or frozen Redis cannot hang a webhook request or a scrape.
 * - `worker`: BullMQ workers and what they write with (record queue, refused dead letters). Blocking commands need
 *   `maxRetriesPerRequest: null`; commands wait through a reconnection rather than fail a job.
 * - `dashboard`: Bull Board's queues. Waits for a reconnection briefly (one retry, offline queue) and answers within
 *   `commandTimeoutMs`, so a frozen Redis gives the page an error, not a hung request.
 * - `operator`: a one-shot CLI command (`doctor`, `stats`, `replay`). Connected by `connectOrFail` with a deadline,
 *   never reconnected: a lost connection fails the next command at once.
 *
 * Where Redis is comes in three topologies (`RedisTopology`): one server (`REDIS_URL`), a Sentinel group
 * (`REDIS_SENTINELS`: ioredis asks the Sentinels for the master, and follows a failover as soon as they announce it,
 * `failoverDetector`), or a Cluster (`REDIS_CLUSTER_NODES`: an ioredis `Cluster`, the role's options on each node's
 * connection). The role options are the same for all three. A `READONLY` or `LOADING` answer (a master demoted by a
 * failover, a replica promoted while it loads) makes every role reconnect, to the master of the moment.
 */
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import type { Config, RedisTopology } from '../config/config.ts';
import { redactUrl } from '../redact.ts';

/** Where Redis is and how to log in to it: `REDIS_URL`, and the Sentinels or Cluster nodes when there are some. */
export type RedisSettings = RedisTopology;

/** A connection of any topology: BullMQ takes both. */
export type RedisClient = Redis | Cluster;

export type ConnectionRole =
  | { role: 'fail-fast'; name: string; commandTimeoutMs: number }
  | { role: 'worker'; name: string }
  | { role: 'dashboard'; name: string; commandTimeoutMs: number }
  | { role: 'operator'; name: string; connectTimeoutMs: number };

export function redisSettingsOf(config: Pick<Config, 'redis'>): RedisSettings {
  return config.redis;
}

/** Where Redis is, as it may be shown (in an error message, a log line): passwords masked. */
export function describeRedis(settings: RedisSettings): string {
  const url = redactUrl(settings.url, 'REDIS_URL');
  const list = (addresses: readonly { host: string; port: number }[]) =>
    addresses.map(({ host, port }) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`)).join(',');
  switch (settings.kind) {
    case 'standalone':
      return url;
    case 'sentinel':
      return `master "${settings.masterName}" of Sentinels ${list(settings.sentinels)}`;
    case 'cluster':
      return `Cluster ${list(settings.nodes)}`;
  }
}

/** A new client for `role`; it connects at once, except an `operator` one (see `connectOrFail`). */
export function createConnection(settings: RedisSettings, role: ConnectionRole): RedisClient {
  return joinFamily(newClient(settings, role), { closed: false, members: new Set() });
}

/**
 * A client and the copies BullMQ makes of it (`duplicate()`: a worker's blocking connection), closed together by
 * `closeForGood`. BullMQ closes its copy with `disconnect()`, then marks it `end` itself, and its worker loop may
 * still call `connect()` on it afterwards: with Redis unreachable, that copy then retried for ever, with no error
 * listener left, and the process never exited (seen with a worker stopped while the Sentinels were down). BullMQ also
 * disconnects and connects a blocking connection on purpose while it runs, so a `disconnect()` alone cannot mean
 * "closed for good": `closeForGood` does, and after it no member connects again.
 */
interface Family {
  closed: boolean;
  members: Set<RedisClient>;
}

const families = new WeakMap<RedisClient, Family>();

function joinFamily<C extends RedisClient>(client: C, family: Family): C {
  family.members.add(client);
  families.set(client, family);
  const connect = client.connect.bind(client);
  client.connect = ((callback?: () => void) =>
    family.closed ? Promise.reject(new Error('Connection is closed.')) : connect(callback)) as C['connect'];
  const duplicate = client.duplicate.bind(client) as (...args: unknown[]) => C;
  client.duplicate = ((...args: unknown[]) => joinFamily(duplicate(...args), family)) as C['duplicate'];
  return client;
}

/** Closes a client from `createConnection` and every copy made of it, so that none of them connects again. */
export function closeForGood(client: RedisClient): void {
  const family = families.get(client) ?? { closed: false, members: new Set([client]) };
  family.closed = true;
  for (const member of family.members) member.disconnect();
}

function newClient(settings: RedisSettings, role: ConnectionRole): RedisClient {
  const options = optionsOf(role);
  switch (settings.kind) {
    case 'standalone':
      return new Redis(settings.url, options);
    case 'sentinel': {
      const sentinel: RedisOptions = {
        ...options,
        ...dataNodeOptions(settings.url),
        sentinels: settings.sentinels.map(({ host, port }) => ({ host, port })),
        name: settings.masterName,
        sentinelUsername: settings.sentinelUsername ?? undefined,
        sentinelPassword: settings.sentinelPassword ?? undefined,
        ...(settings.sentinelTls ? { sentinelTLS: {} } : {}),
        // The data nodes' TLS (rediss://) applies to the master found through the Sentinels only with this on.
        enableTLSForSentinelMode: new URL(settings.url).protocol === 'rediss:',
        // Listens to the Sentinels' +switch-master: without it, a client keeps writing to the old master until that
        // one answers READONLY or closes the connection, and a write it confirmed meanwhile can be lost. Not for a
        // one-shot command (`operator`), which never reconnects anyway.
        failoverDetector: role.role !== 'operator',
        sentinelRetryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
      };
      return role.role === 'operator' ? new Redis(sentinel) : new SentinelFollower(sentinel);
    }
    case 'cluster':
      return new Cluster(
        settings.nodes.map(({ host, port }) => ({ host, port })),
        clusterOptionsOf(options, dataNodeOptions(settings.url)),
      );
  }
}

/**
 * A connection through the Sentinels that does not stay closed by accident. ioredis 6 ends such a connection for good
 * (status `end`, every later command "Connection is closed.") when its failover detector hears `+switch-master` while
 * the connection is being made again, as after the master was killed: `SentinelConnector.connect` then throws instead
 * of retrying. Seen in the Sentinel tests: a worker-role connection ended during a `kill -9` failover. This one
 * connects again after an end it was not asked for; `disconnect()` and `quit()` still close it for good.
 */
class SentinelFollower extends Redis {
  private closing = false;

  constructor(options: RedisOptions) {
    super(options as RedisOptions & { replyMapping?: 'legacy' });
    this.on('end', () => {
      if (this.closing) return;
      setTimeout(() => {
        if (!this.closing && this.status === 'end') this.connect().catch(() => undefined);
      }, 100).unref();
    });
  }

  override disconnect(reconnect = false): void {
    if (!reconnect) this.closing = true;
    super.disconnect(reconnect);
  }

  override quit(callback?: Parameters<Redis['quit']>[0]): ReturnType<Redis['quit']> {
    this.closing = true;
    return super.quit(callback);
  }
}

/**
 * The servers a key-less check must ask: every master of a Cluster (ioredis sends a key-less command to a random
 * node), else the client itself (on Sentinel, the master of the moment).
 */
export function masterNodes(client: RedisClient): Redis[] {
  return client instanceof Cluster ? client.nodes('master') : [client];
}

/** The connections of a client: itself, or a Cluster's node connections. */
export function connectionsOf(client: RedisClient): Redis[] {
  return client instanceof Cluster ? client.nodes() : [client];
}

/** Commands sent and not answered yet, on every connection of the client. */
export function pendingCommands(client: RedisClient): number {
  let pending = 0;
  for (const connection of connectionsOf(client)) pending += connection.commandQueue.length;
  return pending;
}

/**
 * The connection that carries the writes to hash slot `slot`: the client itself, or on a Cluster the connection to
 * the master of that slot as the client knows it (null when the slot, or its master's connection, is not known).
 */
export function slotMaster(client: RedisClient, slot: number | null): Redis | null {
  if (!(client instanceof Cluster)) return client;
  const master = slot === null ? undefined : client.slots[slot]?.[0];
  return client.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === master) ?? null;
}

/**
 * The hash slot of `key` on a Cluster (asked of the Cluster, which computes it as it routes), or null on one server
 * and through Sentinel, where there are no slots.
 */
export async function slotOf(client: RedisClient, key: string): Promise<number | null> {
  return client instanceof Cluster ? Number(await client.cluster('KEYSLOT', key)) : null;
}

/**
 * `host:port` of a node connection: where it is connected (through Sentinel, the master it was given), else where it
 * was told to connect.
 */
export function addressOf(node: Redis): string {
  const host = node.stream?.remoteAddress ?? node.options.host;
  const port = node.stream?.remotePort ?? node.options.port;
  return `${host?.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * The options of a connection to one Sentinel itself (not to a data node): its own credentials and TLS
 * (`REDIS_SENTINEL_USERNAME`, `REDIS_SENTINEL_PASSWORD`, `REDIS_SENTINEL_TLS`). For the failover watch and `doctor`.
 */
export function sentinelOptions(
  settings: Extract<RedisSettings, { kind: 'sentinel' }>,
  address: { host: string; port: number },
  name: string,
): RedisOptions {
  return {
    host: address.host,
    port: address.port,
    username: settings.sentinelUsername ?? undefined,
    password: settings.sentinelPassword ?? undefined,
    ...(settings.sentinelTls ? { tls: {} } : {}),
    connectionName: name,
    enableReadyCheck: false,
  };
}

/** User, password, database and TLS of the data nodes, from `REDIS_URL` (its host and port are not used). */
function dataNodeOptions(url: string): RedisOptions {
  const parsed = new URL(url);
  const db = parsed.pathname.replace(/^\//, '');
  return {
    ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    ...(db ? { db: Number(db) } : {}),
    ...(parsed.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

/**
 * A role's options on a Cluster: what applies to the cluster as a whole (offline queue, reconnection, lazy
 * connection) at the top, the rest on each node's connection (`redisOptions`).
 */
function clusterOptionsOf(role: RedisOptions, dataNode: RedisOptions): ClusterOptions {
  const { enableOfflineQueue, retryStrategy, lazyConnect, enableAutoPipelining, ...perNode } = role;
  return {
    enableOfflineQueue: enableOfflineQueue ?? true,
    clusterRetryStrategy: retryStrategy ?? undefined,
    lazyConnect,
    enableAutoPipelining,
    // A failover moves slots: ask again soon, not after the default 100 ms.
    retryDelayOnFailover: 50,
    retryDelayOnClusterDown: 100,
    redisOptions: { ...perNode, ...dataNode },
  };
}

/**
 * `READONLY` (a master demoted by a failover) and `LOADING` (a node still loading its data) say the connection is to
 * the wrong node, or too early: reconnect (the Sentinels or the Cluster name the master of the moment). `resend`: the
 * command that got the answer is sent again after reconnecting, instead of failing.
 */
function reconnectOnRoleChange(resend: boolean): RedisOptions['reconnectOnError'] {
  return (err) => (/^(READONLY|LOADING)\b/.test(err.message) ? (resend ? 2 : 1) : false);
}

/** The client options of a role, whatever the topology. */
export function optionsOf(role: ConnectionRole): RedisOptions {
  return { ...roleOptions(role), reconnectOnError: reconnectOnRoleChange(role.role === 'worker') };
}

function roleOptions(role: ConnectionRole): RedisOptions {
  switch (role.role) {
    case 'fail-fast':
      return {
        connectionName: role.name,
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        // Commands cut off by a lost connection are not sent again after reconnecting: their requests were answered
        // (by their deadline) already, and a burst of resent writes would refill the backlog the reconnection cleared.
        autoResendUnfulfilledCommands: false,
        commandTimeout: role.commandTimeoutMs,
        connectTimeout: 2000,
        // Reconnect quickly: 50 ms, 100 ms, … capped at 1 s.
        retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 5), 1000),
        // Off: automatic pipelining lowers the saturation throughput (each pipeline copies BullMQ's scripts onto a new
        // object; the figures are in the docs' benchmarks). The producer sends a turn's writes together itself.
        enableAutoPipelining: false,
      };
    case 'worker':
      return {
        connectionName: role.name,
        maxRetriesPerRequest: null,
        retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
      };
    case 'dashboard':
      return {
        connectionName: role.name,
        maxRetriesPerRequest: 1,
        enableOfflineQueue: true,
        commandTimeout: role.commandTimeoutMs,
        connectTimeout: 2000,
        retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
      };
    case 'operator':
      return {
        connectionName: role.name,
        lazyConnect: true,
        connectTimeout: role.connectTimeoutMs,
        commandTimeout: 10_000,
        maxRetriesPerRequest: 1,
        retryStrategy: () => null,
      };
  }
}

/**
 * An `operator` connection, connected with a deadline covering the TCP connection and Redis's first answer (a Redis
 * that accepts the connection but never answers, frozen or overloaded, is reported too), and no reconnection: a
 * command sent after the connection is lost fails at once. Throws an Error naming the masked address.
 */
export async function connectOrFail(
  config: Pick<Config, 'redis' | 'queueName'>,
  name: string,
  timeoutMs = 3000,
): Promise<RedisClient> {
  const settings = redisSettingsOf(config);
  const client = createConnection(settings, {
    role: 'operator',
    name: `${config.queueName}:${name}`,
    connectTimeoutMs: timeoutMs,
  });
  // connect() itself rejects with "Connection is closed."; the cause (ECONNREFUSED, WRONGPASS…) is in the events.
  let lastError: Error | null = null;
  client.on('error', (err: Error) => {
    lastError = err;
  });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    await Promise.race([client.connect(), deadline]);
    return client;
  } catch (err) {
    client.disconnect();
    const reason = ((lastError as Error | null) ?? (err as Error)).message.replace(/\.$/, '');
    throw new Error(`Redis at ${describeRedis(settings)} did not answer: ${reason}`, { cause: err });
  } finally {
    clearTimeout(timer);
  }
}
