/**
 * `npm run bench`: how fast does the listener acknowledge Sellsy webhooks and turn them into jobs, next to what is
 * possible on this machine and to the design the project started from? It decides the targets of issue 14.
 *
 * Targets, each its own child process on a free 127.0.0.1 port, all against one private redis-server
 * (AOF on, appendfsync everysec, no RDB, noeviction; never 127.0.0.1:6379):
 *   listener         the real service, `node dist/src/cli.js listen`, default settings, no signing key
 *   listener-signed  the same with SELLSY_SIGN_KEY set and correctly signed bodies
 *   bare             minimal Fastify app answering 200 with no I/O: the ceiling
 *   floor            the same app doing one Redis LPUSH before its 200: the cheapest durable acknowledgement
 *   naive            the design the project started from, the reference of issue 14's targets: Fastify with request
 *                    logging, one BullMQ `queue.add` per request (benchmarks/reference-servers.ts naive)
 *   naive-nolog      the same without request logging (what naive's log lines cost)
 *
 * Two measurements per target, each on a fresh server process and an empty Redis (FLUSHALL + AOF rewrite):
 *   saturation  closed loop: autocannon (in this process, never in a server's) with N connections, pipelining 1,
 *               a burst (4 s by default) after a warm-up run. Acknowledgements per second = 2xx ÷ burst time; and
 *               jobs per second sustained = the burst's acknowledgements ÷ the time from its start until the last of
 *               them exists in Redis as a job (list entry for floor): the count is polled from the burst's end until
 *               it stops growing, the listener's spool drained (benchmarks/ingest/sustained.ts). Equal for a server
 *               that writes the job before its 200; lower for one that acknowledges first and makes the job later.
 *   fixed rate  open loop: after the same closed-loop warm-up, benchmarks/open-loop.ts as a child process sends
 *               R requests/s on a fixed schedule (5 s unmeasured, then the duration); latency from each request's
 *               intended start (no coordinated omission).
 * After each run the jobs (listener, naive) or list entries (floor) in Redis are counted and compared with the 2xx
 * answers: that proves each server really wrote what it acknowledged.
 *
 * Rounds. A small shared VM drifts over minutes (bare saturation measured 10,271 req/s in one run and 16,565 req/s
 * half an hour later, while floor stayed ~7,400), so a ratio of two figures measured minutes apart in one sequential
 * pass partly measures the drift. Each phase (all saturation rounds, then all fixed-rate rounds) is therefore run
 * `rounds` times; a round measures every target once, in an order rotated per round (round 1: bare, floor, naive,
 * listener, listener-signed, naive-nolog; round 2: floor, naive, …, naive-nolog, bare; ...), so that no target is
 * always first or last and the two figures of a ratio are always measured close together (naive right before the
 * listener). Every ratio is computed within each round, then reported as the median of the per-round ratios with
 * their min–max; the tables show, per target, the median of each figure across rounds (each column on its own;
 * non-2xx and error counts are totals) and the key figures of every round (acks/s, jobs/s, fixed-rate p99). The
 * per-run checks (writes = 2xx, foreign load retries, warnings) apply to every single run.
 *
 * Targets (issue 14), printed last as PASS/FAIL with the median ratio and its range (benchmarks/ingest/verdicts.ts):
 *   1 Redis frozen 3 s at 300 req/s: listener p99 ≤ 10 ms, max ≤ 50 ms, 0 lost, 0 duplicated, 0 non-2xx, in 5 runs
 *     out of 5 (the freeze scenario below; fewer rounds print INCOMPLETE at best)
 *   2 listener acknowledgements/s ≥ 1.0× naive's (stretch 1.5×)
 *   3 listener sustained jobs/s ≥ 0.85× naive's (stretch 1.0×), every acknowledged delivery a job
 *   4 listener p99 at the fixed rate ≤ 1.25× naive's (stretch ≤ 1.0×), no non-2xx answer
 *
 * Bodies are Sellsy-like JSON, unique per request (the listener deduplicates on the raw body).
 * Options (argv or env): --burst/BENCH_BURST s (4: saturation's measured burst), --duration/BENCH_DURATION s (10:
 * the fixed-rate window), --warmup/BENCH_WARMUP s (2), --connections/BENCH_CONNECTIONS (50), --rate/BENCH_RATE
 * req/s (2000), --open-connections/BENCH_OPEN_CONNECTIONS (128), --targets/BENCH_TARGETS (all six by default, any
 * subset; without listener and naive targets 2–4 print NOT MEASURED), --skip-build/BENCH_SKIP_BUILD=1,
 * --quiet-wait/BENCH_QUIET_WAIT s (120: before each run, wait that long at most for foreign CPU load to drop),
 * --retries/BENCH_RETRIES (2: a run during which foreign load used > 25% of a core is measured again),
 * --open-warmup/BENCH_OPEN_WARMUP s (5: open-loop traffic at the fixed rate before its measured window),
 * --rounds/BENCH_ROUNDS (3: times each phase is run, see Rounds above),
 * --freeze-rounds/BENCH_FREEZE_ROUNDS (5: rounds of the Redis-freeze fault scenario run after the ingest phases,
 * listener beside the naive design, see benchmarks/redis-freeze.ts; 0 skips it and target 1),
 * BENCH_PIPELINE (1: the whole-pipeline benchmark, listener → worker → PostgreSQL, run after the freeze scenario, see
 * benchmarks/pipeline.ts for its BENCH_PIPELINE_* and BENCH_DATABASE_URL options; 0 skips it),
 * BENCH_TOPOLOGIES (1: the Redis topology benchmark, standalone, replica, Sentinel and Cluster with their failovers,
 * run last, see benchmarks/topologies.ts for its BENCH_TOPOLOGIES_* options; 0 skips it).
 * Duration: about rounds × targets × (2 × warmup + burst + open-warmup + duration + ~10 s of start-up and settling),
 * so the default ingest phases (3 rounds × 6 targets × 2 phases) take about 10 minutes on a quiet machine, and the 5
 * freeze rounds about 3–4 more, plus any wait for foreign load to drop and any repeated runs; the estimate is printed
 * at the start.
 * Prints tables, ratios, the targets' verdicts and the total wall time; writes every run of every round (with its
 * acknowledgements and sustained jobs), the per-round ratios, the per-target medians, the ratio summaries, the
 * freeze runs and the verdicts to bench-results/ingest-<timestamp>.json.
 *
 * The machine's cores are shared by Redis, the server under test and the load generator; every target is measured
 * the same way, and each run's CPU use per process is reported so that contention is visible.
 */

import { type Measurements, measureAll } from './ingest/measure.ts';
import { readOptions } from './ingest/options.ts';
import { measurementReport, runWarnings } from './ingest/report.ts';
import { computeRatios, summarizeFixedRate, summarizeSaturation } from './ingest/summary.ts';
import { issueTargets, verdictReport } from './ingest/verdicts.ts';
import { busyPct, machineInfo, QUIET_PCT } from './lib/machine.ts';
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
  const perRound = opts.targets.length * (2 * opts.warmupS + opts.burstS + opts.openWarmupS + opts.durationS + 10);
  // A freeze round: two runs of 2 s warm-up + 9 s window, each with its own Redis and server, and the settling.
  const freezeS = opts.freezeRounds * 2 * 20;
  process.stderr.write(
    `bench: ${opts.rounds} round(s) × ${opts.targets.length} target(s) × 2 phases, then ${opts.freezeRounds} freeze round(s): ` +
      `about ${minutes(opts.rounds * perRound + freezeS)} on a quiet machine\n`,
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
  const verdicts = issueTargets(m, opts, ratios, freeze?.runs ?? null);

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
  out.push('');
  const ingestRuns = [...m.saturation, ...m.fixedRate];
  const disturbed = { runs: ingestRuns.filter((r) => r.cpu.other > QUIET_PCT).length, of: ingestRuns.length };
  out.push(...verdictReport(verdicts, disturbed));
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
    issueTargets: verdicts,
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
