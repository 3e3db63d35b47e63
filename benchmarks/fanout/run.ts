/**
 * The fan-out benchmark as a whole: one private Redis, then for each destination count N a fresh set of N sinks (one
 * process), a worker whose DESTINATIONS_FILE names them, and a listener, on a queue of their own; a primer, the open
 * loop, and the per-destination figures. Every process and file it started is gone when it returns or throws.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { post, runOpenLoop } from '../lib/load.ts';
import { CpuMeter, cpuSeconds, waitForQuiet } from '../lib/machine.ts';
import { baseEnv, ensureBuilt, isRunning, makeTempDir, removeTempDir, sleep, stopChild } from '../lib/processes.ts';
import { type PrivateRedis, redisVersion as redisVersionOf, startPrivateRedis } from '../lib/redis.ts';
import { jobCount, type Service, startListener, startService } from '../lib/service.ts';
import { summarize } from '../lib/stats.ts';
import type { FanOutOptions } from './options.ts';
import { report } from './report.ts';
import type { Arrival, DestinationResult, FanOutCpu, FanOutResult, FanOutRun } from './results.ts';
import { type Sinks, startSinks } from './sink-process.ts';

/** Deliveries posted before the open loop, each awaited at every sink: the worker consumes and reaches them all. */
const PRIMER = 200;
/** relatedid of the open loop's first delivery; the primer's are 1 … PRIMER. */
const ID_BASE = 1_000_000;

export async function runFanOutBenchmark(opts: FanOutOptions): Promise<{ result: FanOutResult; report: string[] }> {
  ensureBuilt(false);
  const busyBeforePct = (await waitForQuiet(opts.quietWaitS)).busy;
  const redis = await startPrivateRedis();
  try {
    const redisVersion = await redisVersionOf(redis.client);
    const runs: FanOutRun[] = [];
    for (const n of opts.destinations) {
      process.stderr.write(`bench: fan-out, ${n} destination(s), ${opts.rate} deliveries/s for ${opts.seconds} s\n`);
      runs.push(await runOne(opts, redis, n));
      await redis.reset();
    }
    const one = runs.find((r) => r.destinations === 1);
    const cpuRatios = one
      ? runs
          .filter((r) => r !== one)
          .map((r) => ({ destinations: r.destinations, ratio: r.workerCpuPerEventUs / one.workerCpuPerEventUs }))
      : null;
    const result: FanOutResult = {
      options: opts,
      redisVersion,
      busyBeforePct,
      runs,
      cpuRatios,
      ok: runs.every((r) => r.ok),
    };
    return { result, report: report(result) };
  } finally {
    await redis.destroy();
  }
}

async function runOne(opts: FanOutOptions, redis: PrivateRedis, n: number): Promise<FanOutRun> {
  const dir = makeTempDir('sellsy-webhooks-bench-fanout-');
  const queueName = `bench-fanout-${n}-${randomBytes(4).toString('hex')}`;
  const queue = new Queue(queueName, { connection: { url: redis.url } });
  let sinks: Sinks | undefined;
  let worker: Service | undefined;
  let listener: Awaited<ReturnType<typeof startListener>> | undefined;
  try {
    sinks = await startSinks(n);
    const file = join(dir, 'destinations.yaml');
    // JSON is YAML. One secret for all: signatures are the forward handler's cost whatever the key.
    const destinations = sinks.ports.map((port, i) => ({
      name: `sink-${i + 1}`,
      url: `http://127.0.0.1:${port}/hook`,
      secret: `\${BENCH_DESTINATION_SECRET}`,
    }));
    writeFileSync(file, JSON.stringify({ destinations }, null, 2));
    const profile = opts.cpuProfDir
      ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfDir}`, `--cpu-prof-name=worker-${n}-destinations.cpuprofile`]
      : [];
    worker = startService(
      'work',
      {
        ...baseEnv(),
        REDIS_URL: redis.url,
        QUEUE_NAME: queueName,
        DESTINATIONS_FILE: file,
        BENCH_DESTINATION_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
        WORKER_CONCURRENCY: String(opts.workerConcurrency),
        LOG_LEVEL: 'warn',
      },
      true,
      profile,
    );
    listener = await startListener({ REDIS_URL: redis.url, QUEUE_NAME: queueName }, 'listener');

    const primed = await post(listener.url, 1, PRIMER, 10, opts.waitS);
    if (primed.ok2xx !== PRIMER) throw new Error(`primer: ${primed.ok2xx} of ${PRIMER} deliveries acknowledged`);
    await waitForDeliveries(sinks, worker, PRIMER, opts.waitS, 'the primer', true);
    const jobsBefore = await jobCount(queue);

    const pids = {
      listener: listener.pid,
      worker: worker.child.pid,
      redis: redis.pid,
      sinks: sinks.child.pid,
    };
    // The worker is idle here (the primer is delivered) and again once every sink has everything: its CPU between the
    // two is the cost of the open loop's deliveries whatever its lag, where a window would count a backlog's work.
    const workerCpu0 = cpuSeconds(worker.child.pid);
    const { result, cpu } = await runOpenLoop({
      url: listener.url,
      rate: opts.rate,
      durationS: opts.seconds,
      warmupS: opts.warmupS,
      idBase: ID_BASE,
      extraArgs: ['--list-acked'],
      label: `the listener (${n} destinations)`,
      meter: (generator) => windowMeter({ ...pids, generator }),
    });
    if (cpu === null) throw new Error('the open loop ended before its measured window');
    const acked = result.acked ?? [];
    await waitForDeliveries(sinks, worker, PRIMER + acked.length, opts.waitS, 'the open loop', false);
    const workerCpu = cpuSeconds(worker.child.pid) - workerCpu0;
    const jobs = (await jobCount(queue)) - jobsBefore;
    const dump = await sinks.dump();
    const firstMeasured = ID_BASE + Math.round(opts.rate * opts.warmupS);
    const perDestination = dump.map((records, i) => perSink(`sink-${i + 1}`, records, acked, firstMeasured));
    const windowEvents = result.measured.ok2xx - result.measured.notQueued;
    const non2xx = result.all.non2xx + result.all.notQueued;
    const errors = result.all.errors + result.all.unfinished;
    return {
      destinations: n,
      acknowledged: acked.length,
      jobs,
      non2xx,
      errors,
      windowEvents,
      windowSeconds: cpu.wallS,
      achievedRate: result.achievedRate,
      ack: { p50: result.latency.p50, p99: result.latency.p99 },
      workerCpuPerEventUs: (workerCpu / acked.length) * 1e6,
      cpu: cpu.pct,
      perDestination,
      ok:
        jobs === acked.length &&
        non2xx + errors === 0 &&
        perDestination.every((d) => d.missing + d.duplicates + d.unexpected === 0),
    };
  } finally {
    await queue.close();
    const died = await listener?.stop();
    if (died) process.stderr.write(`bench: ${died}\n`);
    if (worker) await stopChild(worker.child, 10_000);
    await sinks?.stop();
    removeTempDir(dir);
  }
}

/** CPU over the open loop's measured window, % of a core per process. */
function windowMeter(pids: Record<'listener' | 'worker' | 'redis' | 'sinks' | 'generator', number | undefined>) {
  const meter = new CpuMeter(pids);
  const t0 = performance.now();
  return { read: () => ({ pct: meter.read() as FanOutCpu, wallS: (performance.now() - t0) / 1000 }) };
}

/**
 * Waits until every sink has at least `expected` requests and the counts have not moved for 500 ms. Past `waitS`:
 * an error when `strict`, else the wait ends and the shortfall shows as `missing`. An error if the worker dies.
 */
async function waitForDeliveries(
  sinks: Sinks,
  worker: Service,
  expected: number,
  waitS: number,
  what: string,
  strict: boolean,
): Promise<void> {
  const deadline = Date.now() + waitS * 1000;
  let last = '';
  let stableSince = Date.now();
  for (;;) {
    const counts = await sinks.counts();
    const key = counts.join(',');
    if (key !== last) stableSince = Date.now();
    last = key;
    if (counts.every((c) => c >= expected) && Date.now() - stableSince >= 500) return;
    if (!isRunning(worker.child))
      throw new Error(`the worker died during ${what} (sinks: ${key} of ${expected})\n${worker.output()}`);
    if (Date.now() > deadline) {
      const message = `${what}: the sinks had ${key} requests of ${expected} after ${waitS} s (BENCH_FANOUT_WAIT)`;
      if (strict) throw new Error(`${message}\nworker output:\n${worker.output()}`);
      process.stderr.write(`bench: ${message}\n`);
      return;
    }
    await sleep(100);
  }
}

/** One destination's figures: the open loop's deliveries (relatedid ≥ ID_BASE) it received, against `acked`. */
function perSink(name: string, records: Arrival[], acked: number[], firstMeasured: number): DestinationResult {
  const first = new Map<number, Arrival>();
  let duplicates = 0;
  for (const record of records) {
    const relatedId = record[2];
    if (!(relatedId >= ID_BASE)) continue;
    if (first.has(relatedId)) duplicates++;
    else first.set(relatedId, record);
  }
  const ackedSet = new Set(acked);
  const missing = acked.filter((id) => !first.has(id)).length;
  const unexpected = [...first.keys()].filter((id) => !ackedSet.has(id)).length;
  const measured = [...first.values()].filter((r) => r[2] >= firstMeasured);
  const e2e = summarize(Float64Array.from(measured, (r) => r[0] - r[1]));
  let firstArrival = Number.POSITIVE_INFINITY;
  let lastArrival = Number.NEGATIVE_INFINITY;
  for (const r of measured) {
    firstArrival = Math.min(firstArrival, r[0]);
    lastArrival = Math.max(lastArrival, r[0]);
  }
  return {
    name,
    eventsPerSecond: measured.length / ((lastArrival - firstArrival) / 1000),
    received: measured.length,
    e2e: { p50: e2e.p50, p90: e2e.p90, p99: e2e.p99, max: e2e.max },
    missing,
    duplicates,
    unexpected,
  };
}
