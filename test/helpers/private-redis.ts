/**
 * What most integration test files open with: a private redis-server started before the file's tests, and a cleanup
 * list run after them (last added first, each failure ignored), before the server is destroyed.
 *
 * `redis` stands for the server once `before` has run: reading it earlier (at the top level of the file) throws.
 */
import { after, before } from 'node:test';
import { type RedisServer, startRedis } from './redis-server.ts';

export type Cleanup = () => Promise<unknown>;

export function usePrivateRedis(): { redis: RedisServer; cleanup: Cleanup[] } {
  let server: RedisServer | null = null;
  const cleanup: Cleanup[] = [];
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn().catch(() => undefined);
    await server?.destroy();
  });
  const redis = new Proxy({} as RedisServer, {
    get(_, key) {
      if (server === null) throw new Error('usePrivateRedis: the server is started by `before`; read it in a test');
      const value = Reflect.get(server, key, server);
      return typeof value === 'function' ? value.bind(server) : value;
    },
  });
  return { redis, cleanup };
}
