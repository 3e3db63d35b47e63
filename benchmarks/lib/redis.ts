/**
 * The benchmarks' Redis: the shared launcher (./redis-server.ts) with production-like durability (AOF on,
 * `appendfsync everysec`, no RDB snapshots, `noeviction`), its process killed and its directory removed when the
 * benchmark exits, and a reset between runs. Never the machine's shared Redis.
 */
import { Redis } from 'ioredis';
import { removeAtExit, removeTempDir, sleep, track } from './processes.ts';
import { redisCommand, startRedis } from './redis-server.ts';

export interface PrivateRedis {
  url: string;
  port: number;
  pid: number | undefined;
  client: Redis;
  /** FLUSHALL, then rewrite the AOF so every run starts from an empty dataset and a small AOF. */
  reset(): Promise<void>;
  /** SIGSTOP: Redis stops answering, connections stay open. */
  freeze(): void;
  /** SIGCONT. */
  thaw(): void;
  destroy(): Promise<void>;
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const server = await startRedis();
  removeAtExit(server.dir);
  const child = server.process;
  if (child) track(child);
  const client = new Redis(server.url, { maxRetriesPerRequest: 1 });
  return {
    url: server.url,
    port: server.port,
    pid: child?.pid,
    client,
    async reset() {
      await client.flushall();
      await rewriteAof(server.port);
    },
    freeze: () => server.freeze(),
    thaw: () => server.thaw(),
    async destroy() {
      client.disconnect();
      await server.destroy();
      removeTempDir(server.dir);
    },
  };
}

/** Redis's version, from INFO. */
export async function redisVersion(client: Redis): Promise<string> {
  return /redis_version:(\S+)/.exec(await client.info('server'))?.[1] ?? 'unknown';
}

/** Rewrites the AOF of the Redis on 127.0.0.1:`port` (small again after a FLUSHALL) and waits until it is done. */
export async function rewriteAof(port: number): Promise<void> {
  // Fails only when a rewrite is already running; then waiting for it is enough.
  await redisCommand(port, ['BGREWRITEAOF']).catch(() => undefined);
  const until = Date.now() + 30_000;
  for (;;) {
    const info = String(await redisCommand(port, ['INFO', 'persistence']));
    if (/aof_rewrite_in_progress:0/.test(info) && /aof_rewrite_scheduled:0/.test(info)) return;
    if (Date.now() > until) throw new Error(`the AOF rewrite of Redis on port ${port} did not finish within 30 s`);
    await sleep(20);
  }
}
