/**
 * The job-memory benchmark: how much Redis memory the service's data takes per job, to size Redis for a backlog.
 *
 *   npm run bench:job-memory [-- --count 2000]
 *
 * Two body profiles: typical Sellsy deliveries (`sellsyBody`, about 160 bytes as JSON and 260 as a `notif=` form) and
 * invoices of about 2 KB with rows (`largeBodyTemplates`), each profile one form and one JSON delivery in turn, every
 * body unique and signed. For each profile, four scenarios, each on a fresh private redis-server (AOF everysec, as
 * production), the default queue name and the default settings but for the ones named, each after `WARM_UP`
 * deliveries run the same way (Redis's fixed costs then sit in the baseline):
 * - waiting, then completed: `count` deliveries posted to the listener (the real app in-process through `inject()`,
 *   the real `BullmqProducer`, no spool) with no worker: bytes per waiting job, its deduplication key included; then
 *   a worker (`startWorker`, one handler that succeeds) completes them, kept `JOB_KEEP_COMPLETED_SECONDS`;
 * - failed: `JOB_ATTEMPTS=1` and a handler that throws `PermanentError`: bytes per dead letter (failed reason, stack);
 * - retried: the default `JOB_ATTEMPTS` (8, retried after 1 ms), a handler that throws an `Error`: a stack per attempt;
 * - latest: `RECORD_ORDER=latest`, every delivery about a record of its own, all completed: bytes per delivery with
 *   the record queue's job and the record's latest-delivery hash, and each of those two alone.
 *
 * Memory is Redis's own count (MEMORY STATS after MEMORY PURGE): the data is `total.allocated` less the overhead that
 * does not grow with the data (start-up, client buffers, script caches, AOF buffer), keeping the keyspace's hash
 * tables; per item, its growth over `count`. BullMQ trims each queue's event stream to about 10,000 events, a fixed
 * cost: each snapshot deletes the streams, and their size is what that freed. jemalloc's own overhead (active pages
 * over allocated bytes) is shown as a ratio, for the margin to leave.
 *
 * Prints a table and the machine line; writes bench-results/job-memory-<date>.json. Exits 1 when a delivery did not
 * become exactly one job in the expected state.
 */
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { type Config, loadConfig } from '../src/config/config.ts';
import { PermanentError } from '../src/errors.ts';
import type { HandlerMap } from '../src/handlers/handler.ts';
import { buildApp } from '../src/listener/app.ts';
import { createLogger } from '../src/logger.ts';
import { createMetrics } from '../src/metrics/metrics.ts';
import { BullmqProducer } from '../src/queue/producer.ts';
import { producerOptionsFrom } from '../src/queue/producer-options.ts';
import { recordQueueName } from '../src/queue/records.ts';
import { startWorker } from '../src/worker/worker.ts';
import { largeBody, largeBodyTemplates, sellsyBody, sellsySignature, WEBHOOK_PATH } from './lib/bodies.ts';
import { machineInfo } from './lib/machine.ts';
import { numberOption } from './lib/options.ts';
import { runMain, sleep } from './lib/processes.ts';
import { type PrivateRedis, redisVersion, startPrivateRedis } from './lib/redis.ts';
import { infoFields } from './lib/redis-server.ts';
import { f, table, writeResults } from './lib/report.ts';
import { waitFor } from './lib/wait.ts';

const SIGN_KEY = 'bench-job-memory-sign-key';
/** BullMQ's default `streams.events.maxLen`, which the service keeps. */
const EVENTS_CAP = 10_000;
const MIB = 1024 * 1024;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// Log lines are written, synchronously as in production, to /dev/null.
const logger = createLogger('info', pino.destination({ dest: '/dev/null', sync: true }));

interface Delivery {
  body: string;
  contentType: string;
}

interface Profile {
  name: string;
  delivery(n: number): Delivery;
}

function profiles(): Profile[] {
  const invoices = largeBodyTemplates(2048);
  return [
    {
      name: 'typical',
      delivery: (n) =>
        n % 2 === 0
          ? { body: `notif=${encodeURIComponent(sellsyBody(n))}`, contentType: 'application/x-www-form-urlencoded' }
          : { body: sellsyBody(n), contentType: 'application/json' },
    },
    { name: '2 KB', delivery: (n) => largeBody(invoices, n) },
  ];
}

/** What Redis holds, as far as the data goes; the bytes of each class of keys (MEMORY USAGE); the event streams. */
interface Snapshot {
  data: number;
  allocated: number;
  allocatorActive: number;
  rss: number;
  classes: Record<string, number>;
  /** The event streams, deleted by the snapshot: their entries and what Redis freed with them. */
  events: number;
  eventBytes: number;
}

/** A RESP map given as a flat array, as an object. */
function pairs(reply: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const list = Array.isArray(reply) ? reply : [];
  for (let i = 0; i + 1 < list.length; i += 2) out[String(list[i])] = list[i + 1];
  return out;
}

/** The class of a key of queue `base` (`bull:<queue>`) or of its record queue. */
function classOf(key: string, base: string): string {
  const records = `${base}-records:`;
  const [queue, rest] = key.startsWith(records)
    ? ['record ', key.slice(records.length)]
    : ['', key.slice(base.length + 1)];
  if (rest.startsWith('latest:')) return 'latest hash';
  if (rest.startsWith('de:')) return `${queue}dedup key`;
  if (UUID.test(rest)) return `${queue}job hash`;
  if (rest === 'events') return `${queue}events`;
  return `${queue}lists and sets`;
}

/** Redis's allocations, and those of the data: less the overhead that does not grow with it, but its key tables. */
async function allocations(client: Redis): Promise<{ total: number; data: number }> {
  const stats = pairs(await client.call('MEMORY', 'STATS'));
  const db = pairs(stats['db.0']);
  const num = (name: string, from = stats) => Number(from[name] ?? 0);
  const total = num('total.allocated');
  const tables = num('overhead.hashtable.main', db) + num('overhead.hashtable.expires', db);
  return { total, data: total - num('overhead.total') + tables };
}

/**
 * Deletes the event streams (only for QueueEvents listeners; BullMQ starts new ones), so that each snapshot counts
 * the jobs alone and the streams' own bytes are known.
 */
async function snapshot(client: Redis, base: string): Promise<Snapshot> {
  // Active rehashing of the keyspace (both tables counted meanwhile) ends within a few server cron runs.
  await sleep(300);
  const classes: Record<string, number> = {};
  const streams: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${base}*`, 'COUNT', 1000);
    cursor = next;
    const pipeline = client.pipeline();
    for (const key of keys) pipeline.call('MEMORY', 'USAGE', key, 'SAMPLES', '0');
    const sizes = (await pipeline.exec()) ?? [];
    keys.forEach((key, i) => {
      const name = classOf(key, base);
      if (name.endsWith('events')) streams.push(key);
      else classes[name] = (classes[name] ?? 0) + Number(sizes[i]?.[1] ?? 0);
    });
  } while (cursor !== '0');
  const withStreams = await allocations(client);
  let events = 0;
  for (const key of streams) events += await client.xlen(key);
  if (streams.length > 0) await client.del(...streams);
  await client.call('MEMORY', 'PURGE');
  const { total, data } = await allocations(client);
  const info = infoFields(await client.info('memory'));
  return {
    data,
    allocated: total,
    allocatorActive: Number(info.allocator_active),
    rss: Number(info.used_memory_rss),
    classes,
    events,
    eventBytes: withStreams.data - data,
  };
}

/** Bytes per item between two snapshots: the data, and each class of keys alone. */
function growth(before: Snapshot, after: Snapshot, count: number) {
  const cls = (name: string) => ((after.classes[name] ?? 0) - (before.classes[name] ?? 0)) / count;
  return {
    perItem: (after.data - before.data) / count,
    allocatorRatio: (after.allocatorActive - before.allocatorActive) / (after.allocated - before.allocated),
    rssPerItem: (after.rss - before.rss) / count,
    classes: Object.fromEntries(
      [...new Set([...Object.keys(before.classes), ...Object.keys(after.classes)])].map((k) => [k, cls(k)]),
    ),
  };
}
type Growth = ReturnType<typeof growth>;

/** Deliveries run through each scenario before its baseline: what Redis allocates once, at its first scripts and
 * commands (several hundred KB), is then in the baseline, not in the per-job figures. */
const WARM_UP = 50;

interface Scenario {
  env: Record<string, string>;
  handlers: HandlerMap;
  /** The sorted set (after the queue's key prefix) that holds the jobs once done: `completed`, `failed`. */
  doneSet: (config: Config) => string;
}

/**
 * One scenario on a fresh private Redis: the real app and producer take `WARM_UP` deliveries, a worker runs them to
 * `doneSet`; then the baseline, `count` more deliveries (`queued`: no worker yet), and a worker runs them (`done`).
 */
async function runScenario(profile: Profile, scenario: Scenario, count: number, problems: string[]) {
  const redis = await startPrivateRedis();
  const config = loadConfig({ REDIS_URL: redis.url, SELLSY_SIGN_KEY: SIGN_KEY, SPOOL_MAX_BYTES: '0', ...scenario.env });
  const producer = new BullmqProducer(producerOptionsFrom(config));
  const app = await buildApp({ config, producer, metrics: createMetrics({ processMetrics: false }), logger });
  const base = `${config.queuePrefix}:${config.queueName}`;
  const c = redis.client;
  const post = async (from: number, n: number) => {
    for (let at = from; at < from + n; at += 50) {
      const batch = Array.from({ length: Math.min(50, from + n - at) }, (_, i) => profile.delivery(at + i));
      const answers = await Promise.all(
        batch.map(({ body, contentType }) =>
          app.inject({
            method: 'POST',
            url: WEBHOOK_PATH,
            headers: { 'content-type': contentType, 'x-webhook-signature': sellsySignature(SIGN_KEY, body) },
            payload: body,
          }),
        ),
      );
      for (const res of answers)
        if (res.statusCode !== 200 || res.json().duplicate !== false) problems.push(`${res.statusCode} ${res.body}`);
    }
  };
  const done = `${config.queuePrefix}:${scenario.doneSet(config)}`;
  const work = async (total: number) => {
    const worker = await startWorker(config, logger, { handlers: scenario.handlers });
    try {
      await waitFor(async () => (await c.zcard(done)) >= total, 60_000 + total * 20, `${total} jobs in ${done}`, 50);
    } finally {
      await worker.close();
    }
  };
  try {
    await waitFor(() => producer.health().ready, 10_000, 'the producer to connect to Redis', 10);
    await post(0, WARM_UP);
    await work(WARM_UP);
    const empty = await snapshot(c, base);
    await post(WARM_UP, count);
    const waiting = await c.llen(`${base}:wait`);
    if (waiting !== count) problems.push(`${profile.name}: ${waiting} waiting jobs instead of ${count}`);
    const queued = await snapshot(c, base);
    await work(WARM_UP + count);
    const finished = await snapshot(c, base);
    return {
      queued: growth(empty, queued, count),
      done: growth(empty, finished, count),
      /** Bytes per event of the event streams, from the events of the worker's run. */
      eventBytes: finished.eventBytes / finished.events,
    };
  } finally {
    await app.close();
    await producer.close();
    await redis.destroy();
  }
}

async function measureProfile(profile: Profile, count: number) {
  const problems: string[] = [];
  const sample = [profile.delivery(0), profile.delivery(1)];
  const succeed: HandlerMap = { '*': async () => undefined };
  const refuse: HandlerMap = {
    '*': async (event) => {
      throw new PermanentError(`invoice ${event?.relatedId} was refused by the accounting system: 422 Unprocessable`);
    },
  };
  const unreachable: HandlerMap = {
    '*': async () => {
      throw new Error('connect ECONNREFUSED 10.20.30.40:443');
    },
  };
  const ingest = (set: string) => (cfg: Config) => `${cfg.queueName}:${set}`;
  const run = (env: Record<string, string>, handlers: HandlerMap, doneSet: Scenario['doneSet']) =>
    runScenario(profile, { env, handlers, doneSet }, count, problems);
  const completed = await run({}, succeed, ingest('completed'));
  const failed = await run({ JOB_ATTEMPTS: '1' }, refuse, ingest('failed'));
  // Every attempt of a retried job leaves its stack trace: the default JOB_ATTEMPTS (8), retried within milliseconds.
  const retried = await run({ JOB_BACKOFF_MS: '1' }, unreachable, ingest('failed'));
  const latest = await run({ RECORD_ORDER: 'latest' }, succeed, (cfg) => `${recordQueueName(cfg.queueName)}:completed`);
  return {
    profile: profile.name,
    bodyBytes: sample.reduce((sum, d) => sum + Buffer.byteLength(d.body), 0) / sample.length,
    waiting: completed.queued,
    completed: completed.done,
    failed: failed.done,
    retried: retried.done,
    latest: latest.done,
    eventBytes: completed.eventBytes,
    eventsAtCapMiB: (completed.eventBytes * EVENTS_CAP) / MIB,
    problems,
  };
}
type ProfileResult = Awaited<ReturnType<typeof measureProfile>>;

/** The record queue's part of a `RECORD_ORDER=latest` delivery: its job, its list and set entries, its dedup key. */
const recordJob = (g: Growth) =>
  (g.classes['record job hash'] ?? 0) +
  (g.classes['record lists and sets'] ?? 0) +
  (g.classes['record dedup key'] ?? 0);

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { count: { type: 'string' } } });
  const count = numberOption('--count', values.count, process.env.BENCH_JOB_COUNT, 2000, 10, true);
  const env = machineInfo();
  const probe: PrivateRedis = await startPrivateRedis();
  const redis = await redisVersion(probe.client).finally(() => probe.destroy());

  const results: ProfileResult[] = [];
  for (const profile of profiles()) {
    process.stderr.write(`bench: ${profile.name} bodies, ${count} deliveries per scenario\n`);
    results.push(await measureProfile(profile, count));
  }

  const row = (label: string, value: (r: ProfileResult) => number, digits = 0) => [
    label,
    ...results.map((r) => f(value(r), digits)),
  ];
  process.stdout.write(
    `\njob-memory benchmark — Redis ${redis}, Node ${env.node}, ${env.nproc} vCPU (${env.cpuModel}), commit ${env.commit}${env.srcDirty ? ' (src modified)' : ''}, ${env.date}\n` +
      `${count} deliveries per scenario, default settings; bytes per item (Redis's allocations, event streams apart)\n\n`,
  );
  process.stdout.write(
    `${table(
      ['bytes per item', ...results.map((r) => r.profile)],
      [
        row('body (bytes, mean of form and JSON)', (r) => r.bodyBytes),
        row('waiting job (dedup key included)', (r) => r.waiting.perItem),
        row('  of which the dedup key', (r) => r.waiting.classes['dedup key'] ?? Number.NaN),
        row('completed job, kept', (r) => r.completed.perItem),
        row('  of which the dedup key', (r) => r.completed.classes['dedup key'] ?? Number.NaN),
        row('dead letter (PermanentError, 1 attempt)', (r) => r.failed.perItem),
        row('dead letter (Error, 8 attempts)', (r) => r.retried.perItem),
        row('RECORD_ORDER=latest: delivery, all kept', (r) => r.latest.perItem),
        row('  of which the record queue job', (r) => recordJob(r.latest)),
        row('  of which the latest-delivery hash', (r) => r.latest.classes['latest hash'] ?? Number.NaN),
        row('event stream entry (bytes per event)', (r) => r.eventBytes),
        row(`event stream at ${EVENTS_CAP} events (MiB, per queue)`, (r) => r.eventsAtCapMiB, 2),
        row('jemalloc active ÷ allocated (waiting)', (r) => r.waiting.allocatorRatio, 2),
        row('jemalloc active ÷ allocated (completed)', (r) => r.completed.allocatorRatio, 2),
        row('RSS per waiting job (after MEMORY PURGE)', (r) => r.waiting.rssPerItem),
      ],
    )}\n`,
  );
  const file = writeResults('job-memory', env.date, { machine: { ...env, redis }, count, results });
  process.stdout.write(`\nresults: ${file}\n`);
  const problems = results.flatMap((r) => r.problems);
  if (problems.length > 0) {
    process.stdout.write(`\nnot every delivery became one job as expected:\n${problems.slice(0, 10).join('\n')}\n`);
    process.exitCode = 1;
  }
}

runMain(main, 'bench: ');
