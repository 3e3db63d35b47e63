/**
 * A private redis-server on a free 127.0.0.1 port in a temporary directory: the launcher that the tests and the
 * benchmarks share (test/helpers/redis-server.ts re-exports it). Never the machine's shared Redis. Also the handle
 * for fault scenarios: kill -9, SIGSTOP, SIGCONT.
 *
 * It lives with the benchmarks because benchmarks import no test code, while tests may use a benchmark's tooling;
 * it depends on nothing but Node and ioredis, so importing it loads nothing else of either.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { waitFor } from './wait.ts';

const BIN = process.env.REDIS_SERVER_BIN ?? 'redis-server';

export class RedisServer {
  private child: ChildProcess | null = null;
  readonly dir: string;
  constructor(
    readonly port: number,
    private readonly args: string[],
    private readonly bin = BIN,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'sellsy-webhooks-redis-'));
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** The running redis-server process (null before start and after it was stopped). */
  get process(): ChildProcess | null {
    return this.child;
  }

  async start(): Promise<void> {
    const child = spawn(
      this.bin,
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--dir',
        this.dir,
        '--save',
        '',
        '--daemonize',
        'no',
        ...this.args,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    this.child = child;
    await waitFor(
      async () => {
        if (child.exitCode !== null) {
          throw new Error(`${this.bin} exited with code ${child.exitCode} on port ${this.port}`);
        }
        const client = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
        client.on('error', () => undefined);
        try {
          await client.connect();
          return (await client.ping()) === 'PONG';
        } catch {
          return false; // not up yet
        } finally {
          client.disconnect();
        }
      },
      10_000,
      `${this.bin} to answer on port ${this.port}`,
      25,
    );
  }

  client(): Redis {
    return new Redis(this.url, { maxRetriesPerRequest: 1 });
  }

  /** kill -9: no chance to write anything more. */
  async kill(): Promise<void> {
    await this.signalAndWait('SIGKILL');
  }

  async stop(): Promise<void> {
    await this.signalAndWait('SIGTERM');
  }

  freeze(): void {
    this.child?.kill('SIGSTOP');
  }

  thaw(): void {
    this.child?.kill('SIGCONT');
  }

  async destroy(): Promise<void> {
    this.thaw();
    await this.signalAndWait('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async signalAndWait(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill(signal);
    });
    this.child = null;
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export function assertRedisServerAvailable(): void {
  const probe = spawnSync(BIN, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      `The tests and benchmarks start their own Redis but cannot run "${BIN}". Install it (Debian/Ubuntu: apt-get install ` +
        'redis-server; macOS: brew install redis) or point REDIS_SERVER_BIN at a redis-server binary.',
    );
  }
}

/** Production-like durability: AOF on, `appendfsync everysec`, `noeviction` (no RDB snapshots: `--save ''`). */
export const DURABLE_ARGS = ['--appendonly', 'yes', '--appendfsync', 'everysec', '--maxmemory-policy', 'noeviction'];

/** A private Redis with AOF on (`appendfsync everysec`, `noeviction`), as production should run. */
export async function startRedis(extraArgs: string[] = []): Promise<RedisServer> {
  assertRedisServerAvailable();
  const server = new RedisServer(await freePort(), [...DURABLE_ARGS, ...extraArgs]);
  await server.start();
  return server;
}
