/**
 * `npm run bench:topologies`: what does each Redis topology cost the listener, and what does a failover cost the
 * senders?
 *
 *   npm run bench:topologies [-- --duration 4 --rate 2000 --failover-rate 200 --parts steady,failover --skip-build]
 *   (also the last phase of `npm run bench`; BENCH_TOPOLOGIES=0 skips it there)
 *
 * Topologies, each started on 127.0.0.1 in temporary directories (every Redis process AOF everysec, as production;
 * benchmarks/lib/redis-sentinel.ts and redis-cluster.ts): standalone; standalone with one replica; Sentinel (a master,
 * two replicas, three Sentinels); Cluster (three masters, three replicas). The listener is the real service
 * (`node dist/src/cli.js listen`, default settings, its own spool), told where Redis is as a user would
 * (REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER_NODES).
 *
 * Steady state (benchmarks/topologies/steady.ts): per topology, with REDIS_WAIT_REPLICAS=0 and, where there is a
 * replica, =1, the listener measured as `npm run bench` measures it (benchmarks/ingest/measure.ts), each phase on an
 * emptied Redis and a fresh listener process: saturation (autocannon, 50 connections, 4 s after 2 s of warm-up), fixed
 * rate (the same warm-up, then 2,000 req/s open loop, 5 s after 2 s at the rate). After each, every 2xx must be a job,
 * counted where the queue lives (on a Cluster under the prefix {bull}, on Sentinel on the current master). Each
 * topology's saturation is divided by standalone's, measured minutes before in the same run.
 *
 * Failovers (benchmarks/topologies/failover.ts): 200 req/s open loop for 8 s, the fault in the middle, with
 * REDIS_WAIT_REPLICAS=0 and =1, a fresh topology per run: Sentinel `SENTINEL FAILOVER`, Sentinel kill -9 of the
 * master, Cluster kill -9 of the master of the queue's slot then its restart as a replica. Once the listener's spool
 * has drained, each acknowledged delivery is looked for on the new master: lost, duplicated. A delivery answered 2xx
 * and lost with REDIS_WAIT_REPLICAS=1 is a defect: listed under DEFECTS, and the script exits 1.
 *
 * Options (argv or env): --connections/BENCH_TOPOLOGIES_CONNECTIONS (50), --warmup/BENCH_TOPOLOGIES_WARMUP s (2),
 * --duration/BENCH_TOPOLOGIES_DURATION s (4), --rate/BENCH_TOPOLOGIES_RATE req/s (2000),
 * --open-connections/BENCH_TOPOLOGIES_OPEN_CONNECTIONS (128), --open-warmup/BENCH_TOPOLOGIES_OPEN_WARMUP s (2),
 * --open-duration/BENCH_TOPOLOGIES_OPEN_DURATION s (5), --failover-rate/BENCH_TOPOLOGIES_FAILOVER_RATE req/s (200),
 * --failover-duration/BENCH_TOPOLOGIES_FAILOVER_DURATION s (8), --quiet-wait/BENCH_TOPOLOGIES_QUIET_WAIT s (30: before
 * each steady run, wait that long at most for foreign CPU load to drop), --parts/BENCH_TOPOLOGIES_PARTS
 * (steady,failover), --skip-build/BENCH_SKIP_BUILD=1. The estimate is printed at the start: about 4 minutes with the
 * defaults on a quiet 2-core machine. Prints tables and writes bench-results/topologies-<timestamp>.json.
 *
 * Every Redis process shares the cores with the listener and the load generator: on a small machine a topology with
 * more processes measures slower for that reason too. The figures are for comparison on one machine, not targets.
 */
import { ensureBuilt, runMain } from './lib/processes.ts';
import { readTopologiesOptions, skipBuild } from './topologies/options.ts';
import { runTopologiesBenchmark } from './topologies/run.ts';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opts = readTopologiesOptions(args);
  ensureBuilt(!skipBuild(args), { announce: false });
  const { report, defects } = await runTopologiesBenchmark(opts);
  process.stdout.write(`\n${report.join('\n')}\n`);
  if (defects.length > 0) process.exitCode = 1;
}

runMain(main);
