/**
 * The whole pipeline: how fast do Sellsy deliveries become rows in PostgreSQL, listener → Redis → worker → `postgres`
 * handler, next to storing the same rows straight into PostgreSQL?
 *
 *   npm run bench:pipeline [-- --skip-build] [--destinations 1,3,10]
 *
 * (Its PostgreSQL phases are also the last phase of `npm run bench`; BENCH_PIPELINE=0 skips them there.) Last, the
 * fan-out phase: the same listener → worker path with DESTINATIONS_FILE of 1, 3 and 10 local sinks instead of
 * PostgreSQL (benchmarks/fanout.ts, where it is described; `npm run bench:fanout` runs it alone); `--destinations`
 * (or BENCH_FANOUT_DESTINATIONS) picks the counts, `--destinations 0` skips it.
 *
 * Processes: a private redis-server (benchmarks/lib/redis.ts: AOF everysec, 127.0.0.1, never the machine's Redis); the
 * listener `node dist/src/cli.js listen` (default settings, spool in a temporary directory, log discarded) and one
 * worker `node dist/src/cli.js work` (`DATABASE_URL`, `DATABASE_SCHEMA`, `WORKER_CONCURRENCY`, `LOG_LEVEL=warn`),
 * each its own process; the load generator runs in this process (phase 1) or in benchmarks/open-loop.ts (phase 2).
 * PostgreSQL is the machine's (`BENCH_DATABASE_URL`, a loopback address only), in a fresh schema `bench_<hex>` that
 * is dropped at the end, on errors and on SIGINT/SIGTERM too.
 *
 * Warm-up: 1,000 deliveries through the whole pipeline (which also proves the worker consumes), then TRUNCATE.
 * Phase 1, throughput: `events` unique deliveries (bodies from lib/bodies.ts `sellsyBody`) posted by `connections`
 *   concurrent requests (undici Pool, pipelining 1), then a bounded wait (`waitS`) until every acknowledged delivery
 *   is a row; an error if not. pipeline events/s = rows ÷ (last `stored_at` − first `received_at`). Also: the
 *   listener's acknowledgements/s during that run, the worker's rows/s from its first to its last row, and the
 *   worker alone: rows stored after the last delivery was received ÷ the time it took to store them (the backlog's
 *   drain rate).
 * Reference, just after phase 1 (so that the machine's drift stays out of the ratio): the same rows, read back from
 *   phase 1, inserted again by this process into an empty copy of the table (`LIKE … INCLUDING ALL`) with the
 *   handler's single-row statement, one row per INSERT (every column but `stored_at`), a pool of
 *   min(`WORKER_CONCURRENCY`, 20) connections and `WORKER_CONCURRENCY` inserts in flight; events/s by the same
 *   formula. (The pool is not the worker's: its batched inserts need fewer connections, seen in pg_stat_activity.)
 *   The figure to read is pipeline events/s ÷ direct-insert events/s.
 * Phase 2, latency at a fixed rate: open loop (benchmarks/open-loop.ts, 1 s at the rate, then `seconds`), `rate`
 *   deliveries/s. End to end per row = `stored_at − received_at`, from SQL, for the rows of the measured window;
 *   HTTP acknowledgement latency from each request's intended start for the same requests. Every acknowledged
 *   delivery must be exactly one job and one row: `missing` (acknowledged, no row) and `duplicates` (jobs beyond one
 *   per acknowledged delivery, from the queue's counts: the table's unique key would absorb a second row) must be 0.
 *   The deliveries the listener answered from its spool (Redis slower than ACK_BUDGET_MS) are counted.
 * `received_at` is the listener's clock when the request arrived (ms precision); `stored_at` is PostgreSQL's `now()`
 * for the INSERT (statement start, before its commit); both clocks are this machine's.
 *
 * Options (env): BENCH_PIPELINE_EVENTS (20000), BENCH_PIPELINE_CONNECTIONS (50: concurrent requests in phase 1),
 * BENCH_PIPELINE_RATE (500 deliveries/s), BENCH_PIPELINE_SECONDS (10), BENCH_WORKER_CONCURRENCY (50),
 * BENCH_PIPELINE_WAIT (120 s: at most, for the rows of a phase), BENCH_QUIET_WAIT (120 s: at most, before starting,
 * for foreign CPU load to drop below 25% of a core), BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/test),
 * BENCH_SKIP_BUILD=1 or --skip-build (dist/ is built anyway if missing), BENCH_PIPELINE_MODE (`split`: the listener and
 * the worker as two processes, `listen` and `work`, as docs/operations.md advises for production; `start`: both in one
 * process, `sellsy-webhooks start`, what `npm start` runs — its CPU is then reported as the listener's).
 * The PostgreSQL phases take about a minute, the fan-out phase about 25 s per destination count (plus the build and
 * any wait for a quiet machine). Prints tables, each phase's CPU use per process (PostgreSQL's included; `other` shows
 * foreign load), the targets of issue 14 (pipeline ≥ 0.5× direct INSERT; end-to-end p99 at 500/s ≤ 10 ms) and of
 * issue 16 (10 destinations ≤ 3× the worker's CPU per event of 1), met or NOT met (a report, not a check: the exit
 * code ignores them); writes bench-results/pipeline-<timestamp>.json (the fan-out phase under `fanOut`); exits 1 when
 * a check fails.
 */

import { parseArgs } from 'node:util';
import { fanOutOptionsFromEnv } from './fanout/options.ts';
import { runFanOutBenchmark } from './fanout/run.ts';
import { machineInfo } from './lib/machine.ts';
import { ensureBuilt, runMain } from './lib/processes.ts';
import { f, writeResults } from './lib/report.ts';
import { pipelineOptionsFromEnv } from './pipeline/options.ts';
import { runPipelineBenchmark } from './pipeline/run.ts';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'skip-build': { type: 'boolean' }, destinations: { type: 'string' } } });
  const opts = pipelineOptionsFromEnv();
  const fanOutOpts = fanOutOptionsFromEnv(values.destinations);
  const skipBuild = values['skip-build'] || process.env.BENCH_SKIP_BUILD === '1';
  ensureBuilt(!skipBuild, { buildIfMissing: true });
  const env = machineInfo();
  const startedAt = performance.now();
  const { result, report: lines } = await runPipelineBenchmark(opts);
  const fanOut = fanOutOpts.destinations.length > 0 ? await runFanOutBenchmark(fanOutOpts) : null;
  const wallTimeS = (performance.now() - startedAt) / 1000;
  const file = writeResults('pipeline', env.date, {
    machine: env,
    wallTimeS,
    ...result,
    fanOut: fanOut?.result ?? null,
  });
  process.stdout.write(
    `\nPipeline benchmark — node ${env.node}, nproc ${env.nproc}, ${env.cpuModel}, commit ${env.commit}, ${env.date}\n` +
      `${[...lines, ...(fanOut?.report ?? [])].join('\n')}\n\nWall time ${f(wallTimeS, 0)} s (build excluded)\n` +
      `Results written to ${file}\n`,
  );
  if (!result.ok || fanOut?.result.ok === false) process.exitCode = 1;
}

runMain(main);
