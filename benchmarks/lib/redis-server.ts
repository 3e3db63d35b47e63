/**
 * A private redis-server on a free 127.0.0.1 port in a temporary directory: the launcher that the tests and the
 * benchmarks share (test/helpers/redis-server.ts re-exports it). Never the machine's shared Redis. Also the handle
 * for fault scenarios: kill -9, SIGSTOP, SIGCONT.
 *
 * It lives with the benchmarks because benchmarks import no test code, while tests may use a benchmark's tooling;
 * it depends on nothing but Node and ioredis, so importing it loads nothing else of either.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { waitFor } from './wait.ts';

const BIN = process.env.REDIS_SERVER_BIN ?? 'redis-server';

export class RedisServer {
  private child: ChildProcess | null = null;
  readonly dir: string;
  /** The configuration file given first on the command line, or null (options only). */
  readonly configFile: string | null;
  /**
   * `config`, when given, is written to `<dir>/redis.conf` and passed before the options: Sentinel needs a file of its
   * own that it can rewrite, and keeps it across restarts.
   */
  constructor(
    readonly port: number,
    private readonly args: string[],
    private readonly bin = BIN,
    config?: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'sellsy-webhooks-redis-'));
    this.configFile = null;
    if (config !== undefined) {
      this.configFile = join(this.dir, 'redis.conf');
      writeFileSync(this.configFile, config);
    }
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
        ...(this.configFile ? [this.configFile] : []),
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

/**
 * `count` distinct free ports for which `accept(port, chosen so far)` holds: below 55535 for a Cluster node, say,
 * whose bus listens on port + 10000.
 */
export async function freePorts(
  count: number,
  accept: (port: number, chosen: ReadonlySet<number>) => Promise<boolean> | boolean = () => true,
): Promise<number[]> {
  const ports = new Set<number>();
  for (let tries = 0; ports.size < count; tries++) {
    if (tries > 100 * count) throw new Error(`found no ${count} free ports that fit`);
    const port = await freePort();
    if (!ports.has(port) && (await accept(port, ports))) ports.add(port);
  }
  return [...ports];
}

/** Whether a server can listen on 127.0.0.1:`port` now. */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.on('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * One command on a fresh connection to 127.0.0.1:`port`, closed after: for probing servers that may be down, frozen
 * or failing over. Rejects with the server's error, or when nothing answers within `timeoutMs`.
 */
export async function redisCommand(port: number, args: (string | number)[], timeoutMs = 2_000): Promise<unknown> {
  const [command, ...rest] = args;
  const client = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    enableReadyCheck: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return await client.call(String(command), ...rest);
  } finally {
    client.disconnect();
  }
}

/** A server's address, as a client's `sentinels` or cluster seed list takes it. */
export interface Address {
  host: string;
  port: number;
}

/** INFO text (`key:value` lines) as an object. */
export function infoFields(info: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of info.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) out[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return out;
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

/**
 * For replicated topologies: a full sync starts at once instead of waiting 5 s (the Redis 7 default) for more
 * replicas to ask.
 */
export const REPLICATION_ARGS = ['--repl-diskless-sync-delay', '0'];

/** A private Redis with AOF on (`appendfsync everysec`, `noeviction`), as production should run. */
export async function startRedis(extraArgs: string[] = []): Promise<RedisServer> {
  assertRedisServerAvailable();
  const server = new RedisServer(await freePort(), [...DURABLE_ARGS, ...extraArgs]);
  await server.start();
  return server;
}
