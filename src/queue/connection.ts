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
 * Only standalone Redis (`REDIS_URL`) is supported. The address and the role are kept apart so that another topology
 * (Sentinel, Cluster) changes `RedisSettings`, `redisSettingsOf` and `createConnection`'s choice of client only;
 * the role options stay as they are (with Cluster they go into its `redisOptions`).
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { Config } from '../config/config.ts';
import { redactUrl } from '../redact.ts';

/** Where Redis is and how to log in to it. */
export interface RedisSettings {
  /** `redis://` or `rediss://` URL: host, port, user, password, database, TLS. */
  url: string;
}

export type ConnectionRole =
  | { role: 'fail-fast'; name: string; commandTimeoutMs: number }
  | { role: 'worker'; name: string }
  | { role: 'dashboard'; name: string; commandTimeoutMs: number }
  | { role: 'operator'; name: string; connectTimeoutMs: number };

export function redisSettingsOf(config: Pick<Config, 'redisUrl'>): RedisSettings {
  return { url: config.redisUrl };
}

/** Where Redis is, as it may be shown (in an error message, a log line): passwords masked. */
export function describeRedis(settings: RedisSettings): string {
  return redactUrl(settings.url, 'REDIS_URL');
}

/** A new client for `role`; it connects at once, except an `operator` one (see `connectOrFail`). */
export function createConnection(settings: RedisSettings, role: ConnectionRole): Redis {
  return new Redis(settings.url, optionsOf(role));
}

/** The client options of a role, whatever the topology. */
export function optionsOf(role: ConnectionRole): RedisOptions {
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
 * The `fail-fast` connection from a bare URL, for the BullMQ producer, whose options carry `redisUrl` rather than
 * `RedisSettings`.
 */
export function createFailFastConnection(url: string, commandTimeoutMs: number, name: string): Redis {
  return createConnection({ url }, { role: 'fail-fast', name, commandTimeoutMs });
}

/**
 * An `operator` connection, connected with a deadline covering the TCP connection and Redis's first answer (a Redis
 * that accepts the connection but never answers, frozen or overloaded, is reported too), and no reconnection: a
 * command sent after the connection is lost fails at once. Throws an Error naming the masked address.
 */
export async function connectOrFail(config: Config, name: string, timeoutMs = 3000): Promise<Redis> {
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
