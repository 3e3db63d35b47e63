/**
 * What most integration test files open with: a private redis-server started before the file's tests, and a cleanup
 * list run after them (last added first, each failure ignored), before the server is destroyed; with `client()`, also
 * one ioredis client to it, disconnected at the end.
 *
 * `redis` and `client` stand for the server and the client once `before` has run: using them earlier (at the top
 * level of the file) throws.
 */
import { after, before } from 'node:test';
import type { Redis } from 'ioredis';
import { type RedisServer, startRedis } from './redis-server.ts';

export type Cleanup = () => Promise<unknown>;

/** An object standing for `current()`, which is set later (by `before`): every property read goes to it. */
function lateBound<T extends object>(current: () => T | null, what: string): T {
  const target = () => {
    const value = current();
    if (value === null) throw new Error(`usePrivateRedis: the ${what} is started by \`before\`; use it in a test`);
    return value;
  };
  return new Proxy({} as T, {
    get(_, key) {
      const real = target();
      const value = Reflect.get(real, key, real);
      return typeof value === 'function' ? value.bind(real) : value;
    },
    has: (_, key) => Reflect.has(target(), key),
  });
}

export function usePrivateRedis(): { redis: RedisServer; client: Redis; cleanup: Cleanup[] } {
  let server: RedisServer | null = null;
  let connection: Redis | null = null;
  const cleanup: Cleanup[] = [];
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => undefined);
    connection?.disconnect();
    await server?.destroy();
  });
  const redis = lateBound(() => server, 'server');
  // Made at its first use, so that files that do not use it open no connection.
  const client = lateBound(() => {
    if (connection === null && server !== null) connection = server.client();
    return connection;
  }, 'client');
  return { redis, client, cleanup };
}
