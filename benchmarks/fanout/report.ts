/** The fan-out benchmark's printed report: per destination, per destination count, and issue 16's CPU target. */
import { f, table } from '../lib/report.ts';
import type { FanOutCpu, FanOutResult, FanOutRun } from './results.ts';

/** Issue 16: N destinations may cost at most this many times the worker's CPU per event of one. */
export const CPU_RATIO_TARGET = 3;
/** The destination count the target is stated for. */
export const TARGET_DESTINATIONS = 10;
/** Foreign load (% of a core) past which a window's figures are flagged: the processes under test were starved. */
const DISTURBED_PCT = 30;

const cpuLine = (run: FanOutRun) => {
  const c: FanOutCpu = run.cpu;
  return (
    `  ${run.destinations} destination(s): worker ${f(c.worker, 0)}, listener ${f(c.listener, 0)}, ` +
    `redis ${f(c.redis, 0)}, sinks ${f(c.sinks, 0)}, generator ${f(c.generator, 0)}, other ${f(c.other, 0)}`
  );
};

const checkCell = (run: FanOutRun) => {
  const missing = run.perDestination.reduce((a, d) => a + d.missing, 0);
  const duplicates = run.perDestination.reduce((a, d) => a + d.duplicates, 0);
  const unexpected = run.perDestination.reduce((a, d) => a + d.unexpected, 0);
  return (
    `${run.ok ? 'ok' : 'FAILED'}: ${run.acknowledged} acknowledged, ${run.jobs} jobs, ${run.non2xx} non-2xx, ` +
    `${run.errors} errors; over the destinations ${missing} missing, ${duplicates} duplicates, ${unexpected} unexpected`
  );
};

export function report(r: FanOutResult): string[] {
  const o = r.options;
  const one = r.runs.find((run) => run.destinations === 1);
  const target = r.cpuRatios?.find((x) => x.destinations === TARGET_DESTINATIONS);
  const targetLine =
    target === undefined
      ? `Target (issue 16): ${TARGET_DESTINATIONS} destinations ≤ ${CPU_RATIO_TARGET}× the worker's CPU per event of 1 — not measured (needs runs at 1 and ${TARGET_DESTINATIONS})`
      : `Target (issue 16): ${TARGET_DESTINATIONS} destinations ≤ ${CPU_RATIO_TARGET}× the worker's CPU per event of 1: ` +
        `${f(target.ratio)}× — ${target.ratio <= CPU_RATIO_TARGET ? 'met' : 'NOT met'}`;
  return [
    '',
    `Fan-out: ${o.rate} deliveries/s for ${o.seconds} s (open loop, after ${o.warmupS} s at the rate) through the ` +
      `listener to one worker (WORKER_CONCURRENCY ${o.workerConcurrency}, DESTINATIONS_FILE of N local sinks, ` +
      `no postgres handler), redis ${r.redisVersion}; sinks: one process, 204 to every request; ` +
      `machine busy before start ${f(r.busyBeforePct, 0)}% of a core`,
    "Per destination; end to end = sink arrival − receivedAt (ms precision), ms; events/s = the window's deliveries ÷ their arrival span",
    table(
      ['N', 'destination', 'events/s', 'received', 'e2e p50', 'p90', 'p99', 'max', 'missing', 'dup', 'unexpected'],
      r.runs.flatMap((run) =>
        run.perDestination.map((d) => [
          String(run.destinations),
          d.name,
          f(d.eventsPerSecond, 0),
          String(d.received),
          f(d.e2e.p50),
          f(d.e2e.p90),
          f(d.e2e.p99),
          f(d.e2e.max),
          String(d.missing),
          String(d.duplicates),
          String(d.unexpected),
        ]),
      ),
    ),
    '',
    "The worker's CPU (/proc utime + stime), from before the open loop until every sink had everything, ÷ its acknowledged deliveries:",
    table(
      ['N', 'deliveries', 'achieved/s', 'ack p99 ms', 'worker % core (window)', 'µs CPU/event', '÷ 1 destination'],
      r.runs.map((run) => [
        String(run.destinations),
        String(run.acknowledged),
        f(run.achievedRate, 0),
        f(run.ack.p99),
        f(run.cpu.worker, 0),
        f(run.workerCpuPerEventUs, 0),
        one ? f(run.workerCpuPerEventUs / one.workerCpuPerEventUs) : '-',
      ]),
    ),
    'CPU, % of one core, over each measured window (other: foreign load, unattributed kernel time):',
    ...r.runs.map(cpuLine),
    '',
    'Every acknowledged delivery at every destination exactly once:',
    ...r.runs.map((run) => `  ${run.destinations} destination(s): ${checkCell(run)}`),
    ...r.runs
      .filter((run) => run.cpu.other > DISTURBED_PCT)
      .map(
        (run) =>
          `Warning: ${f(run.cpu.other, 0)}% of a core used by other work with ${run.destinations} destination(s)`,
      ),
    ...(o.cpuProfDir ? [`Worker CPU profiles written to ${o.cpuProfDir}`] : []),
    '',
    targetLine,
  ];
}
