/**
 * `npm run bench`: how fast does the listener acknowledge Sellsy webhooks, next to what is possible on this machine?
 *
 * Targets, each its own child process on a free 127.0.0.1 port, all against one private redis-server
 * (AOF on, appendfsync everysec, no RDB, noeviction; never 127.0.0.1:6379):
 *   listener         the real service, `node dist/src/cli.js listen`, default settings, no signing key
 *   listener-signed  the same with SELLSY_SIGN_KEY set and correctly signed bodies
 *   bare             minimal Fastify app answering 200 with no I/O: the ceiling
 *   floor            the same app doing one Redis LPUSH before its 200: the cheapest durable acknowledgement
 *   naive            (opt-in) the design the project started from: Fastify with request logging, one BullMQ
 *                    `queue.add` per request (benchmarks/reference-servers.ts naive)
 *
 * Two measurements per target, each on a fresh server process and an empty Redis (FLUSHALL + AOF rewrite):
 *   saturation  closed loop: autocannon (in this process, never in a server's) with N connections, pipelining 1,
 *               for the duration after a warm-up run; requests/s and latency percentiles.
 *   fixed rate  open loop: after the same closed-loop warm-up, benchmarks/open-loop.ts as a child process sends
 *               R requests/s on a fixed schedule (5 s unmeasured, then the duration); latency from each request's
 *               intended start (no coordinated omission).
 * After each run the jobs (listener) or list entries (floor) in Redis are counted and compared with the 2xx
 * answers: that proves the listener really wrote what it acknowledged.
 *
 * Rounds. A small shared VM drifts over minutes (bare saturation measured 10,271 req/s in one run and 16,565 req/s
 * half an hour later, while floor stayed ~7,400), so a ratio of two figures measured minutes apart in one sequential
 * pass partly measures the drift. Each phase (all saturation rounds, then all fixed-rate rounds) is therefore run
 * `rounds` times; a round measures every target once, in an order rotated per round (round 1: bare, floor, listener,
 * listener-signed; round 2: floor, listener, listener-signed, bare; ...), so that no target is always first or last
 * and the two figures of a ratio are always measured close together. Every ratio is computed within each round,
 * then reported as the median of the per-round ratios with their min–max; the tables show, per target, the median
 * of each figure across rounds (each column on its own; non-2xx and error counts are totals) and the key figure of
 * every round (req/s, fixed-rate p99). The per-run checks (writes = 2xx, foreign load retries, warnings) apply to
 * every single run.
 *
 * Bodies are Sellsy-like JSON, unique per request (the listener deduplicates on the raw body).
 * Options (argv or env): --duration/BENCH_DURATION s (10), --warmup/BENCH_WARMUP s (2),
 * --connections/BENCH_CONNECTIONS (50), --rate/BENCH_RATE req/s (2000), --open-connections/BENCH_OPEN_CONNECTIONS
 * (128), --targets/BENCH_TARGETS (listener,listener-signed,bare,floor... any subset; add `naive`, the design the
 * project started from, to measure the reference the targets were set against), --skip-build/BENCH_SKIP_BUILD=1,
 * --quiet-wait/BENCH_QUIET_WAIT s (120: before each run, wait that long at most for foreign CPU load to drop),
 * --retries/BENCH_RETRIES (2: a run during which foreign load used > 25% of a core is measured again),
 * --open-warmup/BENCH_OPEN_WARMUP s (5: open-loop traffic at the fixed rate before its measured window),
 * --rounds/BENCH_ROUNDS (3: times each phase is run, see Rounds above),
 * --freeze-rounds/BENCH_FREEZE_ROUNDS (1: rounds of the Redis-freeze fault scenario run last, listener beside the
 * naive design, see benchmarks/redis-freeze.ts; 0 skips it),
 * BENCH_PIPELINE (1: the whole-pipeline benchmark, listener → worker → PostgreSQL, run after the freeze scenario, see
 * benchmarks/pipeline.ts for its BENCH_PIPELINE_* and BENCH_DATABASE_URL options; 0 skips it),
 * BENCH_TOPOLOGIES (1: the Redis topology benchmark, standalone, replica, Sentinel and Cluster with their failovers,
 * run last, see benchmarks/topologies.ts for its BENCH_TOPOLOGIES_* options; 0 skips it).
 * Duration: about rounds × targets × (2 × warmup + open-warmup + 2 × duration + ~8 s of start-up and settling), so
 * the default run (3 rounds × 4 targets × 2 phases, 10 s each) takes about 7–8 minutes on a quiet machine, plus
 * any wait for foreign load to drop and any repeated runs; the estimate is printed at the start.
 * Prints tables and ratios and the total wall time; writes every run of every round, the per-round ratios, the
 * per-target medians and the ratio summaries to bench-results/ingest-<timestamp>.json.
 *
 * The machine's cores are shared by Redis, the server under test and the load generator; every target is measured
 * the same way, and each run's CPU use per process is reported so that contention is visible.
 */

import { type Measurements, measureAll } from './ingest/measure.ts';
import { readOptions } from './ingest/options.ts';
import { measurementReport, runWarnings } from './ingest/report.ts';
import { computeRatios, summarizeFixedRate, summarizeSaturation } from './ingest/summary.ts';
import { busyPct, machineInfo } from './lib/machine.ts';
import { ensureBuilt, runMain } from './lib/processes.ts';
import { redisVersion as redisVersionOf, startPrivateRedis } from './lib/redis.ts';
import { minutes, writeResults } from './lib/report.ts';
import { pipelineOptionsFromEnv } from './pipeline/options.ts';
import { runPipelineBenchmark } from './pipeline/run.ts';
import { runFreezeBenchmark } from './redis-freeze/scenario.ts';
import { readTopologiesOptions } from './topologies/options.ts';
import { runTopologiesBenchmark, type TopologiesOutcome } from './topologies/run.ts';

async function main(): Promise<void> {
  const startedAt = performance.now();
  const opts = readOptions();
  const env = machineInfo();
  // Read now, so that a bad BENCH_PIPELINE_* value fails before the long run rather than after it.
  const pipelineOpts = opts.pipeline ? pipelineOptionsFromEnv() : null;
  const topologiesOpts = opts.topologies ? readTopologiesOptions() : null;
  ensureBuilt(opts.build);

  // How busy the machine is before we start: anything but ~0 means other work will share the cores.
  const busyBeforePct = await busyPct(1000);

  // Rough duration, from the per-run overheads measured on a 2-vCPU VM (server start, Redis reset, settling).
  const perRound = opts.targets.length * (2 * opts.warmupS + opts.openWarmupS + 2 * opts.durationS + 8);
  process.stderr.write(
    `bench: ${opts.rounds} round(s) × ${opts.targets.length} target(s) × 2 phases, about ${minutes(opts.rounds * perRound)} on a quiet machine\n`,
  );

  const redis = await startPrivateRedis();
  const redisVersion = await redisVersionOf(redis.client);
  let m: Measurements;
  try {
    m = await measureAll(opts, redis);
  } finally {
    await redis.destroy();
  }

  const freeze =
    opts.freezeRounds > 0
      ? await runFreezeBenchmark({ rate: 300, beforeS: 3, freezeS: 3, afterS: 3, rounds: opts.freezeRounds })
      : null;
  // Its failure (no PostgreSQL, a check) is reported with the figures above rather than losing them.
  let pipeline: Awaited<ReturnType<typeof runPipelineBenchmark>> | { error: string } | null = null;
  if (pipelineOpts !== null) {
    try {
      pipeline = await runPipelineBenchmark(pipelineOpts);
    } catch (err) {
      pipeline = { error: (err as Error)?.stack ?? String(err) };
    }
  }

  let topologies: TopologiesOutcome | { error: string } | null = null;
  if (topologiesOpts !== null) {
    try {
      topologies = await runTopologiesBenchmark(topologiesOpts);
    } catch (err) {
      topologies = { error: (err as Error)?.stack ?? String(err) };
    }
  }

  const sat = opts.targets.map((t) => summarizeSaturation(t, m.saturation)).filter((s) => s !== null);
  const fix = opts.targets.map((t) => summarizeFixedRate(t, m.fixedRate)).filter((s) => s !== null);
  const ratios = computeRatios(m, opts);

  const out = measurementReport({ env, redisVersion, busyBeforePct, opts, m, sat, fix, ratios });
  if (freeze !== null) {
    out.push('');
    out.push(...freeze.report);
  }
  if (pipeline !== null) {
    out.push('');
    out.push(...('error' in pipeline ? [`Pipeline benchmark FAILED: ${pipeline.error}`] : pipeline.report));
  }
  if (topologies !== null) {
    out.push('');
    out.push(...('error' in topologies ? [`Topology benchmark FAILED: ${topologies.error}`] : topologies.report));
  }
  const warnings = runWarnings(m, opts);
  if (pipeline !== null && ('error' in pipeline || !pipeline.result.ok))
    warnings.push('pipeline: the benchmark failed or an acknowledged delivery was not exactly one row (see above)');
  if (topologies !== null && ('error' in topologies || topologies.defects.length > 0))
    warnings.push(
      'topologies: the benchmark failed or lost an acknowledged delivery with REDIS_WAIT_REPLICAS=1 (see above)',
    );
  if (warnings.length > 0) {
    out.push('');
    out.push('Warnings');
    out.push(...warnings.map((w) => `  ${w}`));
  }

  const wallTimeS = (performance.now() - startedAt) / 1000;
  const roundsJson = Array.from({ length: opts.rounds }, (_, i) => ({
    round: i + 1,
    saturationOrder: m.orders.saturation[i] ?? [],
    fixedRateOrder: m.orders['fixed-rate'][i] ?? [],
    ratios: Object.fromEntries(Object.entries(ratios).map(([key, r]) => [key, r.byRound[i] ?? null])),
  }));
  const file = writeResults('ingest', env.date, {
    machine: { ...env, redisVersion, busyBeforePct },
    options: opts,
    wallTimeS,
    medians: { saturation: sat, fixedRate: fix },
    ratios,
    rounds: roundsJson,
    saturation: m.saturation,
    fixedRate: m.fixedRate,
    redisFreeze: freeze?.runs ?? null,
    pipeline: pipeline === null ? null : 'error' in pipeline ? pipeline : pipeline.result,
    topologies:
      topologies === null
        ? null
        : 'error' in topologies
          ? topologies
          : { file: topologies.file, defects: topologies.defects, warnings: topologies.warnings },
    warnings,
  });
  out.push('');
  out.push(`Total wall time ${minutes(wallTimeS)}${opts.build ? ' (build included)' : ''}`);
  out.push(`Results written to ${file}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

runMain(main);
