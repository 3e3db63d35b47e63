/**
 * `npm run bench:cost`: CPU time per delivery of the listener's request path, in-process, for comparing code changes.
 *
 * The HTTP load benchmark (`npm run bench`) is what users see, but on a shared 2-core VM its figures drift by tens of
 * percent between runs, which hides changes of 10–20 %. This script removes the sockets and the other processes:
 * it builds the real app with the real BullMQ producer on a private redis-server and sends deliveries with Fastify's
 * `inject()`, measuring this process's CPU time (user + system) per delivery. Two references are measured in the
 * same process and the same run:
 *   bare   a Fastify route that answers 200 with no I/O (what inject + routing cost by themselves);
 *   fake   the real app with a producer that answers at once (everything but BullMQ and Redis).
 * Figures are the minimum over repetitions (BENCH_REPEAT, 5): the least disturbed measurement of each variant.
 * Concurrency 2 (moderate load: few requests share a Redis round trip) and 50 (saturation).
 * Redis's own CPU per job is reported too (its CPU time from /proc, Linux only).
 *
 * Options: BENCH_REQUESTS per measurement (5000), BENCH_REPEAT (5), LOG_LEVEL of the app (info).
 */
import Fastify from 'fastify';
import { pino } from 'pino';
import { type LogLevel, loadConfig } from '../src/config/config.ts';
import { buildApp } from '../src/listener/app.ts';
import { createLogger } from '../src/logger.ts';
import { createMetrics } from '../src/metrics/metrics.ts';
import { BullmqProducer } from '../src/queue/producer.ts';
import { producerOptionsFrom } from '../src/queue/producer-options.ts';
import type { Producer } from '../src/queue/writer.ts';
import { sellsyBody, WEBHOOK_PATH } from './lib/bodies.ts';
import { cpuSeconds } from './lib/machine.ts';
import { startPrivateRedis } from './lib/redis.ts';
import { waitFor } from './lib/wait.ts';

type Injector = Awaited<ReturnType<typeof Fastify>>;

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 5000);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 5);
const LOG_LEVEL = (process.env.LOG_LEVEL ?? 'info') as LogLevel;

let nextId = 0;

async function drive(app: Injector, requests: number, concurrency: number): Promise<void> {
  let left = requests;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (left-- > 0) {
        const res = await app.inject({
          method: 'POST',
          url: WEBHOOK_PATH,
          headers: { 'content-type': 'application/json' },
          payload: sellsyBody(nextId++),
        });
        if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${res.body}`);
      }
    }),
  );
}

async function measure(app: Injector, concurrency: number, redisPid?: number) {
  await drive(app, Math.min(REQUESTS, 2000), concurrency);
  let best = Number.POSITIVE_INFINITY;
  let redisBest = Number.POSITIVE_INFINITY;
  for (let i = 0; i < REPEAT; i++) {
    const cpu = process.cpuUsage();
    const redis0 = cpuSeconds(redisPid);
    await drive(app, REQUESTS, concurrency);
    const used = process.cpuUsage(cpu);
    best = Math.min(best, (used.user + used.system) / REQUESTS);
    redisBest = Math.min(redisBest, ((cpuSeconds(redisPid) - redis0) * 1e6) / REQUESTS);
  }
  return { cpuUs: best, redisUs: redisBest };
}

const redis = await startPrivateRedis();
const config = loadConfig({ REDIS_URL: redis.url, QUEUE_NAME: 'bench-cost', LOG_LEVEL, PORT: '0' });
// Log lines are written, synchronously as in production, to /dev/null.
const logger = createLogger(config.logLevel, pino.destination({ dest: '/dev/null', sync: true }));

const bare = Fastify({ logger: false });
bare.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_r, body, done) => done(null, body));
bare.post(WEBHOOK_PATH, async () => ({ ok: true }));

const fakeProducer: Producer = {
  enqueue: async (job) => ({ jobId: job.data.deliveryId, duplicate: false }),
  health: () => ({ status: 'ready', ready: true, lastError: null }),
  ping: async () => true,
  close: async () => undefined,
};
const fake = await buildApp({ config, producer: fakeProducer, metrics: createMetrics(), logger });
const producer = new BullmqProducer(producerOptionsFrom(config));
const real = await buildApp({ config, producer, metrics: createMetrics(), logger });
await waitFor(() => producer.health().ready, 10_000, 'the producer to connect to Redis', 10);

const rows: string[] = [];
try {
  for (const concurrency of [2, 50]) {
    const b = await measure(bare as unknown as Injector, concurrency);
    const f = await measure(fake as unknown as Injector, concurrency);
    const l = await measure(real as unknown as Injector, concurrency, redis.pid);
    rows.push(
      `concurrency ${String(concurrency).padStart(2)}   bare ${b.cpuUs.toFixed(1).padStart(6)} µs   ` +
        `fake producer ${f.cpuUs.toFixed(1).padStart(6)} µs   listener ${l.cpuUs.toFixed(1).padStart(6)} µs ` +
        `(+ Redis ${l.redisUs.toFixed(1)} µs)   listener ÷ bare ${(l.cpuUs / b.cpuUs).toFixed(2)}   ` +
        `BullMQ + Redis client ${(l.cpuUs - f.cpuUs).toFixed(1)} µs   app without them ${(f.cpuUs - b.cpuUs).toFixed(1)} µs`,
    );
  }
} finally {
  await real.close();
  await fake.close();
  await producer.close();
  await redis.destroy();
}
process.stdout.write(
  `CPU per delivery through inject(), min of ${REPEAT} × ${REQUESTS} requests, LOG_LEVEL=${LOG_LEVEL}\n${rows.join('\n')}\n`,
);
