/**
 * The Redis-freeze fault scenario (see the header of benchmarks/redis-freeze.ts): one run per target and round, each
 * on its own fresh private Redis, and its report.
 */
import { Queue } from 'bullmq';
import { runOpenLoop } from '../lib/load.ts';
import type { OpenLoopResult } from '../lib/open-loop.ts';
import { baseEnv, makeTempDir, removeTempDir, stopChild, waitForHttp200 } from '../lib/processes.ts';
import { startPrivateRedis } from '../lib/redis.ts';
import { freePort } from '../lib/redis-server.ts';
import { f, table } from '../lib/report.ts';
import { settledJobBodies, startReferenceServer, startService } from '../lib/service.ts';
import type { LatencySummary } from '../lib/stats.ts';

/** Runs of the listener that must all meet the target (issue 14 target 1: "in 5 runs out of 5"). */
export const FREEZE_ROUNDS = 5;
export const FREEZE_TARGET = 'p99 ≤ 10 ms, max ≤ 50 ms while frozen; 0 lost, duplicated, non-2xx, errors, unanswered';

/** Whether one listener run met the target. */
export const freezeRunMet = (r: FreezeRun) =>
  r.frozen.p99 <= 10 &&
  r.frozen.max <= 50 &&
  r.lost === 0 &&
  r.duplicated === 0 &&
  r.non2xx === 0 &&
  r.errors + r.unfinished === 0;

export interface FreezeVerdict {
  /** PASS: at least FREEZE_ROUNDS listener runs, every one met; INCOMPLETE: all met but fewer runs; else FAIL. */
  verdict: 'PASS' | 'FAIL' | 'INCOMPLETE';
  runs: number;
  met: number;
  /** `p99/max` while frozen of each listener run, ms. */
  byRun: string;
}

export function freezeVerdict(runs: FreezeRun[]): FreezeVerdict {
  const listener = runs.filter((r) => r.target === 'listener');
  const met = listener.filter(freezeRunMet).length;
  const verdict =
    met < listener.length || listener.length === 0 ? 'FAIL' : listener.length < FREEZE_ROUNDS ? 'INCOMPLETE' : 'PASS';
  const byRun = listener.map((r) => `${f(r.frozen.p99, 1)}/${f(r.frozen.max, 1)}`).join(', ');
  return { verdict, runs: listener.length, met, byRun };
}

export interface FreezeOptions {
  rate: number;
  beforeS: number;
  freezeS: number;
  afterS: number;
  rounds: number;
}

export interface FreezeRun {
  target: 'listener' | 'naive';
  round: number;
  frozen: LatencySummary;
  whole: LatencySummary;
  acknowledged: number;
  spooled: number;
  non2xx: number;
  errors: number;
  unfinished: number;
  jobs: number;
  lost: number;
  duplicated: number;
  /** Seconds from the thaw until every acknowledged delivery was a job (listener: spool drained). */
  settleS: number;
}

async function runOnce(target: FreezeRun['target'], round: number, opts: FreezeOptions): Promise<FreezeRun> {
  const redis = await startPrivateRedis();
  const spoolDir = makeTempDir('sellsy-webhooks-bench-spool-');
  const queueName = `freeze-${target}`;
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = { ...baseEnv(), PORT: String(port), HOST: '127.0.0.1', REDIS_URL: redis.url, QUEUE_NAME: queueName };
  const service =
    target === 'listener'
      ? startService('listen', { ...env, SPOOL_DIR: spoolDir })
      : startReferenceServer('naive', env);
  const server = service.child;
  let thawedAt = 0;
  try {
    await waitForHttp200(`${url}/readyz`, server, 20_000, () => `${target} stderr:\n${service.output()}`);
    const windowS = opts.beforeS + opts.freezeS + opts.afterS;
    // Frozen from `beforeS` to `beforeS + freezeS` into the measured window.
    const timers: NodeJS.Timeout[] = [];
    let result: OpenLoopResult;
    try {
      ({ result } = await runOpenLoop({
        url,
        rate: opts.rate,
        durationS: windowS,
        warmupS: 2,
        // Enough connections that the generator never queues requests itself while the naive server hangs.
        connections: Math.ceil(opts.rate * (opts.freezeS + 2)),
        extraArgs: [
          '--timeout',
          '60',
          '--mark-from',
          String(opts.beforeS),
          '--mark-to',
          String(opts.beforeS + opts.freezeS),
        ],
        label: target,
        limitS: 2 + windowS + 120,
        onWindow: () => {
          timers.push(
            setTimeout(() => redis.freeze(), opts.beforeS * 1000),
            setTimeout(
              () => {
                redis.thaw();
                thawedAt = performance.now();
              },
              (opts.beforeS + opts.freezeS) * 1000,
            ),
          );
        },
      }));
    } finally {
      for (const t of timers) clearTimeout(t);
      redis.thaw();
    }
    const acknowledged = result.all.ok2xx - result.all.notQueued;

    // Wait until the jobs stop changing (the listener's spool drains in the background), at most 60 s.
    const queue = new Queue(queueName, { connection: { url: redis.url } });
    try {
      const bodies = await settledJobBodies(queue, acknowledged, 60_000);
      const jobs = { total: bodies.length, distinct: new Set(bodies).size };
      return {
        target,
        round,
        frozen: result.marked?.latency as LatencySummary,
        whole: result.latency,
        acknowledged,
        spooled: result.all.spooled,
        non2xx: result.all.non2xx,
        errors: result.all.errors,
        unfinished: result.all.unfinished,
        jobs: jobs.total,
        lost: Math.max(0, acknowledged - jobs.distinct),
        duplicated: jobs.total - jobs.distinct,
        settleS: thawedAt === 0 ? Number.NaN : (performance.now() - thawedAt - 1000) / 1000,
      };
    } finally {
      await queue.close();
    }
  } finally {
    redis.thaw();
    await stopChild(server, 5000);
    await redis.destroy();
    removeTempDir(spoolDir);
  }
}

export async function runFreezeBenchmark(opts: FreezeOptions): Promise<{ runs: FreezeRun[]; report: string[] }> {
  const runs: FreezeRun[] = [];
  for (let round = 1; round <= opts.rounds; round++) {
    for (const target of round % 2 === 1 ? (['listener', 'naive'] as const) : (['naive', 'listener'] as const)) {
      process.stderr.write(`bench: Redis freeze, round ${round}, ${target}\n`);
      runs.push(await runOnce(target, round, opts));
    }
  }
  const header = [
    'target',
    'round',
    'p99 frozen',
    'max frozen',
    'p99 all',
    'max all',
    'acked',
    'spooled',
    'non2xx',
    'errors',
    'jobs',
    'lost',
    'duplicated',
    'settle s',
  ];
  const rows = runs.map((r) => [
    r.target,
    String(r.round),
    f(r.frozen.p99),
    f(r.frozen.max),
    f(r.whole.p99),
    f(r.whole.max),
    String(r.acknowledged),
    String(r.spooled),
    String(r.non2xx),
    String(r.errors + r.unfinished),
    String(r.jobs),
    String(r.lost),
    String(r.duplicated),
    f(r.settleS, 1),
  ]);
  const verdict = freezeVerdict(runs);
  const report = [
    `Redis frozen (SIGSTOP) for ${opts.freezeS} s under ${opts.rate} req/s (open loop, ${opts.beforeS} s before, ${opts.afterS} s after); latency from intended start, ms`,
    table(header, rows),
    '"frozen": requests due while Redis was frozen. lost = acknowledged without a job; duplicated = jobs beyond one per delivery;',
    'settle = seconds after the thaw until the jobs stopped changing (the spool drained).',
    `Target (listener, issue 14 target 1), in ${FREEZE_ROUNDS} runs out of ${FREEZE_ROUNDS}: ${FREEZE_TARGET}: ${verdict.verdict}`,
    `  (met in ${verdict.met} of ${verdict.runs} run(s); p99/max while frozen by run: ${verdict.byRun})`,
  ];
  return { runs, report };
}
