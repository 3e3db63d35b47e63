/** The pipeline benchmark's report, as lines. */
import { QUIET_PCT } from '../lib/machine.ts';
import { f, table } from '../lib/report.ts';
import { OPEN_WARMUP_S } from './phases.ts';
import type { CpuUse, Integrity, PipelineResult } from './results.ts';

const cpuLine = (label: string, c: CpuUse) =>
  `  ${label}: listener ${f(c.listener, 0)}, worker ${f(c.worker, 0)}, redis ${f(c.redis, 0)}, ` +
  `generator ${f(c.generator, 0)}, postgres ${f(c.postgres, 0)}, other ${f(c.other, 0)}`;

const checkCell = (i: Integrity) =>
  `${i.ok ? 'ok' : 'FAILED'}: ${i.jobs} jobs and ${i.rows} rows for ${i.acknowledged} acknowledged, ${i.missing} missing, ` +
  `${i.duplicates} duplicates, ${i.non2xx} non-2xx, ${i.errors} errors ` +
  `(${i.spooled} answered from the listener's spool, queued later)`;

/** Issue 14, target 5: the pipeline at saturation against a direct INSERT, and its end-to-end p99 at 500/s. */
const TARGET_RATIO = 0.5;
const TARGET_RATE = 500;
const TARGET_E2E_P99_MS = 10;

const met = (ok: boolean) => (ok ? 'met' : 'NOT met');

function targetLines(r: PipelineResult): string[] {
  const l = r.latency;
  const p99 =
    l.rate === TARGET_RATE
      ? `${met(l.e2e.p99 <= TARGET_E2E_P99_MS)} (${f(l.e2e.p99)} ms)`
      : `not measured (the fixed rate was ${l.rate}/s: BENCH_PIPELINE_RATE)`;
  return [
    `Target: pipeline ≥ ${TARGET_RATIO}× direct INSERT: ${met(r.ratio >= TARGET_RATIO)} (${f(r.ratio, 3)})`,
    `Target: end-to-end p99 at ${TARGET_RATE}/s ≤ ${TARGET_E2E_P99_MS} ms: ${p99}`,
  ];
}

export function report(r: PipelineResult): string[] {
  const { throughput: t, direct: d, latency: l, options: o } = r;
  const phases: [string, CpuUse][] = [
    ['phase 1', t.cpu],
    ['the direct insert', d.cpu],
    ['phase 2', l.cpu],
  ];
  const disturbed = phases.filter(([, c]) => c.other > QUIET_PCT);
  return [
    `Pipeline: listener → Redis → worker (WORKER_CONCURRENCY ${o.workerConcurrency}) → postgres handler (${t.workerPoolSize} connections seen at most); ` +
      `${o.mode === 'start' ? 'listener and worker in one process (start)' : 'listener and worker as two processes (listen, work)'}; ` +
      `PostgreSQL ${r.postgresVersion} (synchronous_commit ${r.synchronousCommit}), redis ${r.redisVersion}, ` +
      `machine busy before start ${f(r.busyBeforePct, 0)}% of a core`,
    `Throughput: ${o.events} unique deliveries posted ${o.connections} at a time (undici, this process), until every one was a row`,
    table(
      ['measure', 'rows', 'seconds', 'events/s'],
      [
        [
          'pipeline: first received_at → last stored_at',
          String(t.integrity.rows),
          f(t.pipelineSeconds),
          f(t.pipelineRate, 0),
        ],
        [
          '  listener: HTTP acknowledgements, worker running',
          String(t.integrity.acknowledged),
          f(t.listenerSeconds),
          f(t.listenerRate, 0),
        ],
        [
          '  worker: first → last stored_at',
          String(t.integrity.rows),
          f(t.integrity.rows / t.workerRate),
          f(t.workerRate, 0),
        ],
        [
          '  worker alone: backlog after the last receipt',
          String(t.drainRows),
          f(t.drainRows / t.drainRate),
          f(t.drainRate, 0),
        ],
        [
          `direct INSERT (reference): pool ${d.poolSize}, ${d.concurrency} in flight`,
          String(d.events),
          f(d.seconds),
          f(d.rate, 0),
        ],
      ],
    ),
    `pipeline events/s ÷ direct-insert events/s: ${f(r.ratio, 3)}`,
    'CPU, % of one core (postgres: every postgres process of the machine; other: foreign load, unattributed kernel time):',
    cpuLine('phase 1', t.cpu),
    cpuLine('direct INSERT (generator = this process, the inserter)', d.cpu),
    cpuLine('phase 2', l.cpu),
    '',
    `Fixed rate: ${o.rate} deliveries/s for ${o.seconds} s (open loop, benchmarks/open-loop.ts, after ${OPEN_WARMUP_S} s at the rate); ms.`,
    'end to end = stored_at − received_at per row (SQL); ack = HTTP answer, from the intended start of the request',
    table(
      ['rate', 'achieved/s', 'rows', 'e2e p50', 'p90', 'p99', 'max', 'ack p50', 'ack p99', 'ack max'],
      [
        [
          String(l.rate),
          f(l.achievedRate, 0),
          String(l.measuredRows),
          f(l.e2e.p50),
          f(l.e2e.p90),
          f(l.e2e.p99),
          f(l.e2e.max),
          f(l.ack.p50),
          f(l.ack.p99),
          f(l.ack.max),
        ],
      ],
    ),
    '',
    'Every acknowledged delivery exactly one row:',
    `  phase 1: ${checkCell(t.integrity)}`,
    `  phase 2: ${checkCell(l.integrity)}`,
    ...disturbed.map(([label, c]) => `Warning: ${f(c.other, 0)}% of a core used by other work during ${label}`),
    '',
    ...targetLines(r),
  ];
}
