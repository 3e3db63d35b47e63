/**
 * `npm run bench:mover`: how fast the inbox mover (src/queue/mover.ts) makes BullMQ jobs of waiting inbox entries,
 * against the reference of the same jobs written by BullMQ's `queue.add` directly (what the original design does per
 * request), in the same process, on the same private Redis, in the same run. No HTTP, no listener: the cost of the
 * move alone, which `npm run bench`'s sustained figure (target 3 of issue 14) pays on top of the acknowledgements.
 *
 * Each round: N deliveries as the listener makes them (a Sellsy JSON body, its parsed event, the full queue contract)
 * are added with `queue.add` by 16 concurrent writers (the reference, as 16 requests in flight would); then, Redis
 * emptied, the same number are pushed to the inbox untimed, and one mover (with the lease) moves them; timed until the
 * inbox and `moving` are empty. Printed per variant: jobs per second, this process's CPU per job (user + system) and
 * Redis's (from /proc), medians over the rounds; and the ratio mover ÷ direct of each round.
 *
 * Options: BENCH_JOBS per round (20000), BENCH_ROUNDS (3).
 */
import { Queue } from 'bullmq';
import { pino } from 'pino';
import { loadConfig } from '../src/config/config.ts';
import { openMoverProducer } from '../src/listener/open-producer.ts';
import { createLogger } from '../src/logger.ts';
import { createConnection } from '../src/queue/connection.ts';
import { dedupKeyOf, rawBodyFields, type WebhookJob } from '../src/queue/contract.ts';
import { encodeEntry, inboxKeys } from '../src/queue/inbox.ts';
import { InboxMover } from '../src/queue/mover.ts';
import { jobOptionsOf } from '../src/queue/producer-options.ts';
import { parseDelivery } from '../src/sellsy/payload.ts';
import { sellsyBody } from './lib/bodies.ts';
import { cpuSeconds, machineInfo } from './lib/machine.ts';
import { startPrivateRedis } from './lib/redis.ts';
import { median } from './lib/stats.ts';

const JOBS = Number(process.env.BENCH_JOBS ?? 20_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const WRITERS = 16;

interface Figures {
  perSecond: number;
  cpuUsPerJob: number;
  redisUsPerJob: number;
}

const machine = machineInfo(); // also reads the clock tick that cpuSeconds needs
const redis = await startPrivateRedis();
const config = loadConfig({ REDIS_URL: redis.url, QUEUE_NAME: 'bench-mover', LOG_LEVEL: 'warn' });
const logger = createLogger('warn', pino.destination({ dest: '/dev/null', sync: true }));
const keys = inboxKeys(config.queuePrefix, config.queueName);
let serial = 0;

/** A delivery as the listener writes it (src/listener/webhook.ts), with a fresh id and body. */
function delivery(): WebhookJob {
  const n = serial++;
  const raw = Buffer.from(sellsyBody(n));
  const { event } = parseDelivery(raw, 'application/json');
  return {
    name: 'invoice.step',
    data: {
      v: 1,
      deliveryId: `bench-${process.pid}-${n}`,
      receivedAt: new Date().toISOString(),
      contentType: 'application/json',
      ...rawBodyFields(raw),
      account: '929',
      signature: { status: 'not_configured', header: null, scope: 'body' },
      event,
      parseProblem: null,
      dedupKey: dedupKeyOf('929', raw),
      request: { id: `req-${n}`, path: '/webhook/sellsy', ip: '127.0.0.1', userAgent: null },
      source: 'webhook',
    },
  };
}

async function timed(run: () => Promise<void>): Promise<Figures> {
  const cpu = process.cpuUsage();
  const redisCpu = cpuSeconds(redis.pid);
  const started = performance.now();
  await run();
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    perSecond: JOBS / seconds,
    cpuUsPerJob: (used.user + used.system) / JOBS,
    redisUsPerJob: ((cpuSeconds(redis.pid) - redisCpu) * 1e6) / JOBS,
  };
}

/** The reference: `queue.add` of each delivery, with the options and ids the listener's producer gives it. */
async function direct(): Promise<Figures> {
  await redis.reset();
  const connection = createConnection(config.redis, { role: 'worker', name: 'bench-direct' });
  const queue = new Queue(config.queueName, { connection, prefix: config.queuePrefix });
  await queue.waitUntilReady();
  const base = jobOptionsOf(config);
  const jobs = Array.from({ length: JOBS }, delivery);
  let next = 0;
  try {
    return await timed(async () => {
      await Promise.all(
        Array.from({ length: WRITERS }, async () => {
          for (let job = jobs[next++]; job !== undefined; job = jobs[next++]) {
            const { data } = job;
            await queue.add(job.name, data, {
              ...base,
              jobId: data.deliveryId,
              deduplication: { id: data.dedupKey, ttl: config.dedupWindowSeconds * 1000 },
            });
          }
        }),
      );
    });
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

async function moved(): Promise<Figures> {
  await redis.reset();
  for (let i = 0; i < JOBS; i += 500) {
    const batch = Array.from({ length: Math.min(500, JOBS - i) }, () => encodeEntry(delivery()));
    await redis.client.rpush(keys.inbox, ...batch);
  }
  const producer = openMoverProducer(config, logger);
  const waiter = createConnection(config.redis, { role: 'worker', name: 'bench-mover-wait' });
  waiter.on('error', () => undefined);
  while (!producer.health().ready) await new Promise((resolve) => setTimeout(resolve, 10));
  const mover = new InboxMover({ keys, producer, waiter, logger });
  try {
    return await timed(async () => {
      mover.start();
      while ((await redis.client.llen(keys.inbox)) + (await redis.client.llen(keys.moving)) > 0) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    });
  } finally {
    await mover.stop(0);
    await producer.close();
    waiter.disconnect();
  }
}

const rounds: { direct: Figures; mover: Figures }[] = [];
try {
  for (let round = 1; round <= ROUNDS; round++) {
    // Alternating which goes first: a machine that speeds up or slows down in a round weighs on both alike.
    const first = round % 2 === 1 ? await direct() : await moved();
    const second = round % 2 === 1 ? await moved() : await direct();
    const figures = round % 2 === 1 ? { direct: first, mover: second } : { direct: second, mover: first };
    rounds.push(figures);
    process.stderr.write(
      `bench:mover round ${round}: direct ${figures.direct.perSecond.toFixed(0)}/s, mover ${figures.mover.perSecond.toFixed(0)}/s\n`,
    );
  }
} finally {
  await redis.destroy();
}

const row = (name: string, pick: (r: (typeof rounds)[number]) => Figures) => {
  const m = (f: (x: Figures) => number) => median(rounds.map((r) => f(pick(r))));
  return `${name.padEnd(22)}${m((f) => f.perSecond)
    .toFixed(0)
    .padStart(9)}${m((f) => f.cpuUsPerJob)
    .toFixed(1)
    .padStart(14)}${m((f) => f.redisUsPerJob)
    .toFixed(1)
    .padStart(14)}`;
};
const ratios = rounds.map((r) => r.mover.perSecond / r.direct.perSecond);
process.stdout.write(
  [
    `Inbox mover benchmark — node ${machine.node}, nproc ${machine.nproc}, ${machine.cpuModel}, commit ${machine.commit}${machine.srcDirty ? ' (src/ has uncommitted changes)' : ''}, ${machine.date}`,
    `${JOBS} jobs per variant and round, ${ROUNDS} rounds, medians; one process, private Redis (AOF everysec)`,
    `${'variant'.padEnd(22)}${'jobs/s'.padStart(9)}${'node µs/job'.padStart(14)}${'redis µs/job'.padStart(14)}`,
    row(`queue.add × ${WRITERS} writers`, (r) => r.direct),
    row('inbox mover', (r) => r.mover),
    `mover ÷ direct jobs/s: ${median(ratios).toFixed(2)} (rounds ${ratios.map((x) => x.toFixed(2)).join(', ')})`,
    '',
  ].join('\n'),
);
