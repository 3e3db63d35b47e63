/**
 * Builds a listener in-process on a real socket (port 0) with a real producer, plus a BullMQ Queue to inspect jobs.
 * Each call uses its own queue name, so tests sharing a Redis never see each other's jobs.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { type Config, loadConfig } from '../../src/config/config.ts';
import { buildApp } from '../../src/listener/app.ts';
import { createLogger } from '../../src/logger.ts';
import { createMetrics, type Metrics } from '../../src/metrics/metrics.ts';
import { BullmqProducer, type BullmqProducerOptions, producerOptionsFrom } from '../../src/queue/producer.ts';

export interface TestListener {
  url: string;
  config: Config;
  app: FastifyInstance;
  producer: BullmqProducer;
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
  const config = loadConfig({
    REDIS_URL: redisUrl,
    QUEUE_NAME: `test-${randomBytes(4).toString('hex')}`,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    ...env,
  });
  const capture = new LogCapture();
  const logger = createLogger(config.logLevel, capture);
  const metrics = createMetrics({ processMetrics: false });
  const producer = new BullmqProducer({ ...producerOptionsFrom(config), ...producerOptions });
  const app = await buildApp({ config, producer, metrics, logger });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const queue = new Queue(config.queueName, { connection: { url: redisUrl }, prefix: config.queuePrefix });
  queue.on('error', () => undefined);
  return {
    url,
    config,
    app,
    producer,
    metrics,
    queue,
    logs: capture.lines,
    async close() {
      await app.close();
      await producer.close();
      await queue.close();
    },
  };
}

/** Waits until the producer can write, bounded. */
export async function untilReady(listener: TestListener, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!listener.producer.health().ready) {
    if (Date.now() > deadline) throw new Error('producer did not become ready');
    await new Promise((r) => setTimeout(r, 20));
  }
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
