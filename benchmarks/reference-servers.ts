/**
 * Reference servers for the ingest benchmark, each run as its own process:
 *
 *   node --import tsx benchmarks/reference-servers.ts bare    the ceiling: Fastify 5, logger off, answers
 *                                                             200 {"ok":true} with no I/O at all
 *   node --import tsx benchmarks/reference-servers.ts floor   the cheapest durable acknowledgement: the same app,
 *                                                             whose route does one Redis LPUSH of the raw body
 *                                                             (ioredis, default options) before its 200
 *   node --import tsx benchmarks/reference-servers.ts naive   the design this project started from: Fastify with
 *                                                             request logging, one BullMQ `queue.add` (default
 *                                                             connection options) per request, then 200; no
 *                                                             deadline, no spool (the fault benchmark's reference)
 *   node --import tsx benchmarks/reference-servers.ts naive-nolog
 *                                                             the same design without request logging (Fastify's
 *                                                             logger off): what naive's log lines cost
 *
 * Why: the listener's throughput only means something next to what Fastify alone can do on this machine (bare),
 * and its latency next to the least any "write to Redis, then answer" service must pay (floor).
 *
 * bare and floor keep `application/json` bodies as the raw string (no JSON.parse), the cheapest path Fastify
 * offers; the listener does more (parses, builds a job, runs BullMQ's Lua script), so the ratios are conservative.
 *
 * Environment: PORT (required), HOST (127.0.0.1), REDIS_URL (floor, naive, naive-nolog), QUEUE_NAME (naive,
 * naive-nolog; sellsy-webhooks).
 * `GET /readyz` answers 200 once the server can serve (floor: once Redis answers PING).
 * Exits on SIGTERM/SIGINT, and when its stdin closes (the benchmark that started it is gone).
 */
import { Queue } from 'bullmq';
import Fastify from 'fastify';
import { Redis } from 'ioredis';
import { FLOOR_KEY, WEBHOOK_PATH } from './lib/bodies.ts';

const mode = process.argv[2];
if (mode !== 'bare' && mode !== 'floor' && mode !== 'naive' && mode !== 'naive-nolog') {
  process.stderr.write(
    'usage: reference-servers.ts bare|floor|naive|naive-nolog   (env PORT, HOST, REDIS_URL, QUEUE_NAME)\n',
  );
  process.exit(2);
}
const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('reference-servers: PORT must be set\n');
  process.exit(2);
}
const host = process.env.HOST ?? '127.0.0.1';

const redis = mode === 'floor' ? new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379') : null;
redis?.on('error', (err: Error) => process.stderr.write(`reference-servers: redis: ${err.message}\n`));

const app = Fastify({ logger: mode === 'naive' });

// Same bodies as the listener receives; kept as the raw string.
app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
  done(null, body);
});

const naive =
  mode === 'naive' || mode === 'naive-nolog'
    ? new Queue(process.env.QUEUE_NAME ?? 'sellsy-webhooks', { connection: { url: process.env.REDIS_URL } })
    : null;

if (naive !== null) {
  app.post(WEBHOOK_PATH, async (request) => {
    const rawBody = request.body as string;
    let name = 'unknown';
    try {
      const event = JSON.parse(rawBody) as { relatedtype?: string; event?: string };
      name = `${event.relatedtype}.${event.event}`;
    } catch {
      // kept as unknown
    }
    await naive.add(name, { rawBody, receivedAt: new Date().toISOString() });
    return { ok: true };
  });
  app.get('/readyz', async () => ({ ok: true }));
} else if (redis === null) {
  app.post(WEBHOOK_PATH, async () => ({ ok: true }));
  app.get('/readyz', async () => ({ ok: true }));
} else {
  app.post(WEBHOOK_PATH, async (request) => {
    await redis.lpush(FLOOR_KEY, request.body as string);
    return { ok: true };
  });
  app.get('/readyz', async (_request, reply) => {
    const ok = redis.status === 'ready' && (await redis.ping().catch(() => '')) === 'PONG';
    return reply.code(ok ? 200 : 503).send({ ok });
  });
}

let closing = false;
async function shutdown(): Promise<void> {
  if (closing) return;
  closing = true;
  const force = setTimeout(() => process.exit(1), 3000);
  force.unref();
  await app.close().catch(() => undefined);
  redis?.disconnect();
  await naive?.close().catch(() => undefined);
  process.exit(0);
}
process.once('SIGTERM', () => void shutdown());
process.once('SIGINT', () => void shutdown());
// The parent keeps our stdin open; when it dies, the pipe closes and we go too (no orphaned servers).
process.stdin.on('end', () => void shutdown());
process.stdin.on('error', () => void shutdown());
process.stdin.resume();

await app.listen({ port, host });
