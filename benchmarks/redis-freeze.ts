/**
 * The fault benchmark: steady load at a fixed rate while Redis is frozen (SIGSTOP) for a few seconds. What do the
 * senders see, and does every acknowledged delivery become exactly one job?
 *
 *   npm run bench:freeze [-- --rate 300 --before 3 --freeze 3 --after 3 --rounds 5 --skip-build]
 *   (also run by `npm run bench` after its ingest phases, BENCH_FREEZE_ROUNDS rounds, 5 by default)
 *
 * Targets, each run on its own fresh private redis-server (AOF everysec, noeviction) and process:
 *   listener  the real service (`node dist/src/cli.js listen`), default settings, spool in a temporary directory
 *   naive     the design the project started from (benchmarks/reference-servers.ts naive): Fastify with request
 *             logging, one BullMQ `queue.add` per request, no deadline, no spool
 *
 * Each run: benchmarks/open-loop.ts (separate process) sends `rate` requests/s, unique bodies, for 2 s of warm-up and
 * then `before + freeze + after` seconds; Redis is frozen `before` s into the measured window and thawed `freeze` s
 * later. Latency is measured from each request's intended start (no coordinated omission), for the requests due
 * during the freeze (`p99 frozen`, `max frozen`) and over the whole window. Then the spool is left to drain and
 * the jobs are read back: `lost` = acknowledged deliveries (2xx, not `"queued":false`) without a job, `duplicated`
 * = jobs beyond one per delivery (bodies are unique, so each body should make exactly one job).
 * Rounds (5 by default) run back to back, each the listener then naive (naive first in even rounds).
 * Target (issue 14, target 1), in 5 runs out of 5: the listener's p99 ≤ 10 ms and max ≤ 50 ms during the freeze,
 * 0 lost, 0 duplicated, no non-2xx answer, no error or unanswered request. The report prints PASS only
 * then, with each run's p99/max; FAIL if a run missed it; INCOMPLETE if every run met it but there were fewer than 5.
 */

import { parseArgs } from 'node:util';
import { ensureBuilt, runMain } from './lib/processes.ts';
import { FREEZE_ROUNDS, type FreezeOptions, runFreezeBenchmark } from './redis-freeze/scenario.ts';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rate: { type: 'string', default: '300' },
      before: { type: 'string', default: '3' },
      freeze: { type: 'string', default: '3' },
      after: { type: 'string', default: '3' },
      rounds: { type: 'string', default: String(FREEZE_ROUNDS) },
      'skip-build': { type: 'boolean' },
    },
  });
  const opts: FreezeOptions = {
    rate: Number(values.rate),
    beforeS: Number(values.before),
    freezeS: Number(values.freeze),
    afterS: Number(values.after),
    rounds: Number(values.rounds),
  };
  for (const [k, v] of Object.entries(opts)) if (!Number.isFinite(v) || v <= 0) throw new Error(`--${k} must be > 0`);
  ensureBuilt(!values['skip-build'], { announce: false });
  const { report } = await runFreezeBenchmark(opts);
  process.stdout.write(`\n${report.join('\n')}\n`);
}

runMain(main);
