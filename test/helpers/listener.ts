/**
 * Builds a listener in-process on a real socket (port 0) with a real producer, plus a BullMQ Queue to inspect jobs.
 * Each call uses its own queue name, so tests sharing a Redis never see each other's jobs.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before } from 'node:test';
import { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { type Config, loadConfig } from '../../src/config/config.ts';
import { buildApp } from '../../src/listener/app.ts';
import type { MoverHost } from '../../src/listener/mover-host.ts';
import { openListenerProducer } from '../../src/listener/open-producer.ts';
import { createLogger } from '../../src/logger.ts';
import { createMetrics, type Metrics } from '../../src/metrics/metrics.ts';
import { createConnection } from '../../src/queue/connection.ts';
import type { BullmqProducer } from '../../src/queue/producer.ts';
import type { BullmqProducerOptions } from '../../src/queue/producer-options.ts';
import type { Producer } from '../../src/queue/writer.ts';
import type { SpoolingProducer } from '../../src/spool/spooling-producer.ts';
import { type RedisServer, startRedis } from './redis-server.ts';
import { waitFor } from './wait.ts';

export interface TestListener {
  url: string;
  config: Config;
  app: FastifyInstance;
  /** What the app calls: the spooling producer, or the BullMQ one with SPOOL_MAX_BYTES=0. */
  producer: Producer;
  /** The Redis side. */
  queueProducer: BullmqProducer;
  /** Null with SPOOL_MAX_BYTES=0. */
  spooling: SpoolingProducer | null;
  /** ACK_WRITE=inbox: the mover's thread host; null with ACK_WRITE=job. */
  mover: MoverHost | null;
  metrics: Metrics;
  queue: Queue;
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line) this.lines.push(JSON.parse(line));
    callback();
  }
}

export async function startTestListener(
  redisUrl: string,
  env: Record<string, string> = {},
  producerOptions: Partial<BullmqProducerOptions> = {},
): Promise<TestListener> {
  const tmp = env.SPOOL_DIR === undefined ? await mkdtemp(join(tmpdir(), 'sellsy-spool-')) : null;
  const configEnv = {
    SPOOL_DIR: tmp ?? '',
    REDIS_URL: redisUrl,
    QUEUE_NAME: `test-${randomBytes(4).toString('hex')}`,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    // Tests that read a job right after its 200 need Redis, not the spool, to have answered: on a loaded machine a
    // 10 ms scheduling gap would spool a delivery now and then. Tests of the spool set ACK_BUDGET_MS themselves.
    ACK_BUDGET_MS: '1000',
    // The 200 waits for the job, so a test can read it at once and see `jobId` and `duplicate` in the answer. The
    // default, ACK_WRITE=inbox, is tested in test/listener/inbox.test.ts and by every test that runs the CLI.
    ACK_WRITE: 'job',
    ...env,
  };
  const config = loadConfig(configEnv);
  const capture = new LogCapture();
  const logger = createLogger(config.logLevel, capture);
  const metrics = createMetrics({ processMetrics: false });
  const opened = await openListenerProducer(config, { logger, metrics }, producerOptions);
  const { producer } = opened;
  const app = await buildApp({ config, producer, spool: opened.spooling?.spool, metrics, logger, env: configEnv });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  // The tests' own view of the queue, through the same topology (one server, Sentinel or Cluster).
  const inspect = createConnection(config.redis, { role: 'worker', name: `${config.queueName}:test` });
  inspect.on('error', () => undefined);
  const queue = new Queue(config.queueName, { connection: inspect, prefix: config.queuePrefix });
  queue.on('error', () => undefined);
  return {
    url,
    config,
    app,
    producer,
    queueProducer: opened.queueProducer,
    spooling: opened.spooling,
    mover: opened.mover,
    metrics,
    queue,
    logs: capture.lines,
    async close() {
      await app.close();
      await opened.close();
      await queue.close();
      inspect.disconnect();
      if (tmp !== null) await rm(tmp, { recursive: true, force: true });
    },
  };
}

/**
 * One Redis for the test file (started before its tests, stopped after them) and a `listener(env)` that starts a
 * ready listener on it, closed after the file's tests.
 */
export function useTestListeners(): {
  redis: () => RedisServer;
  listener: (env?: Record<string, string>) => Promise<TestListener>;
} {
  let redis: RedisServer | undefined;
  const started: TestListener[] = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const l of started) await l.close();
    await redis?.destroy();
  });
  const current = () => {
    if (redis === undefined) throw new Error('useTestListeners: Redis is started in before()');
    return redis;
  };
  return {
    redis: current,
    async listener(env = {}) {
      const l = await startTestListener(current().url, env);
      started.push(l);
      await untilReady(l);
      return l;
    },
  };
}

/** Waits until the producer can write, bounded. */
export async function untilReady(listener: TestListener, timeoutMs = 10_000): Promise<void> {
  await waitFor(() => listener.queueProducer.health().ready, timeoutMs, 'the producer to be ready', 20);
}

export interface PostResult {
  status: number;
  body: Record<string, unknown>;
  ms: number;
}

export async function post(
  url: string,
  body: Buffer | string,
  headers: Record<string, string>,
  path = '/webhook/sellsy',
): Promise<PostResult> {
  const started = performance.now();
  const response = await fetch(`${url}${path}`, { method: 'POST', body, headers });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : {}, ms: performance.now() - started };
}
