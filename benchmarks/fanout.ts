/**
 * Destinations: what does sending each event to N destinations cost the worker, and how fast does each destination get
 * it? The fan-out phase of `npm run bench:pipeline` (after its PostgreSQL phases), alone:
 *
 *   npm run bench:fanout [-- --destinations 1,3,10] [--skip-build]
 *   npm run bench:pipeline [-- --destinations 1,3,10]    (the PostgreSQL phases, then this; --destinations 0 skips it)
 *
 * For each destination count N, in one run: a process of N HTTP sinks on 127.0.0.1 (benchmarks/fanout/sinks.ts, 204
 * to every request, each arrival recorded with its webhook-id; no signature check), one worker `node dist/src/cli.js
 * work` (DESTINATIONS_FILE naming the N sinks, every event to each, one secret; no postgres handler, so that the
 * worker's CPU is the fan-out's), and the listener `node dist/src/cli.js listen`, on a private redis-server
 * (benchmarks/lib/redis.ts) and a queue of their own. A primer of 200 deliveries, each awaited at every sink, proves
 * the worker consumes and opens its connections; then the open loop (benchmarks/open-loop.ts, a process of its own)
 * sends `rate` deliveries/s: `warmup` seconds, then the measured window of `seconds`.
 *
 * Measured, per destination: its events/s (the window's deliveries ÷ the span of their arrivals), end to end = sink
 * arrival − `receivedAt` of the forwarded body (the listener's clock, ms precision; the same machine's clock), p50 to
 * max; `missing` (acknowledged, never received), `duplicates` (a delivery received twice), `unexpected` (received, not
 * acknowledged), all three expected 0, and one job per acknowledged delivery. Per N: the worker's CPU time (/proc
 * utime + stime) from before the open loop (the worker idle) until every sink had every delivery ÷ the deliveries it
 * acknowledged, warm-up included (so that a lag or a backlog neither adds nor hides work), and that ÷ the figure for
 * one destination, against issue 16's target: 10 destinations ≤ 3× the CPU per event of one (a report, not a check).
 *
 * Options (env): BENCH_FANOUT_DESTINATIONS (1,3,10; --destinations wins), BENCH_FANOUT_RATE (500 deliveries/s),
 * BENCH_FANOUT_SECONDS (15), BENCH_FANOUT_WARMUP (2 s), BENCH_WORKER_CONCURRENCY (50), BENCH_FANOUT_WAIT (120 s: at
 * most, after the load, for every destination to receive everything), BENCH_QUIET_WAIT (120 s: at most, before
 * starting, for foreign CPU load to drop below 25% of a core), BENCH_FANOUT_CPU_PROF (a directory: the
 * workers run with --cpu-prof and write worker-<N>-destinations.cpuprofile there, for Chrome DevTools),
 * BENCH_SKIP_BUILD=1 or --skip-build. About 25 s per destination count. Writes bench-results/fanout-<timestamp>.json;
 * exits 1 when a delivery is missing or repeated.
 */
import { parseArgs } from 'node:util';
import { fanOutOptionsFromEnv } from './fanout/options.ts';
import { runFanOutBenchmark } from './fanout/run.ts';
import { machineInfo } from './lib/machine.ts';
import { ensureBuilt, runMain } from './lib/processes.ts';
import { f, writeResults } from './lib/report.ts';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'skip-build': { type: 'boolean' }, destinations: { type: 'string' } } });
  const opts = fanOutOptionsFromEnv(values.destinations);
  if (opts.destinations.length === 0) throw new Error('no destination count to run (--destinations 1,3,10)');
  ensureBuilt(!(values['skip-build'] || process.env.BENCH_SKIP_BUILD === '1'), { buildIfMissing: true });
  const env = machineInfo();
  const startedAt = performance.now();
  const { result, report: lines } = await runFanOutBenchmark(opts);
  const wallTimeS = (performance.now() - startedAt) / 1000;
  const file = writeResults('fanout', env.date, { machine: env, wallTimeS, ...result });
  process.stdout.write(
    `\nFan-out benchmark — node ${env.node}, nproc ${env.nproc}, ${env.cpuModel}, commit ${env.commit}, ${env.date}\n` +
      `${lines.join('\n')}\n\nWall time ${f(wallTimeS, 0)} s (build excluded)\nResults written to ${file}\n`,
  );
  if (!result.ok) process.exitCode = 1;
}

runMain(main);
