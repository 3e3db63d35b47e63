/** The ingest benchmark's report: the tables, the ratios, the generator check and the warnings about single runs. */
import { type MachineInfo, QUIET_PCT } from '../lib/machine.ts';
import { f, joinRounds, table } from '../lib/report.ts';
import type { FixedRateRun, Measurements, Phase, SaturationRun } from './measure.ts';
import type { Options, TargetName } from './options.ts';
import {
  byRound,
  type FixedRateSummary,
  type RatioSummary,
  type SaturationSummary,
  type WritesTally,
} from './summary.ts';

const writesCell = (w: WritesTally | null) =>
  w === null ? '-' : w.ok === w.of ? `ok ${w.ok}/${w.of}` : `MISMATCH in ${w.of - w.ok}/${w.of}`;

/** Warnings about individual runs: each is checked on its own, whatever the medians say. */
export function runWarnings(m: Measurements, opts: Options): string[] {
  const warnings: string[] = [...m.incidents];
  const where = (phase: Phase, r: { target: TargetName; round: number }) => `${phase} round ${r.round} ${r.target}`;
  for (const r of m.saturation) {
    if (r.sustained !== null && !r.sustained.settled)
      warnings.push(
        `${where('saturation', r)}: ${r.sustained.added} writes for ${r.requests2xx} acknowledged in the burst, not settled ${f(r.sustained.lastWriteAfterS, 1)} s after its start`,
      );
    if (r.spooled)
      warnings.push(
        `${where('saturation', r)}: ${r.spooled} deliveries went to the spool (Redis slower than ACK_BUDGET_MS)`,
      );
  }
  for (const r of m.fixedRate) {
    const at = where('fixed-rate', r);
    if (r.all.spooled)
      warnings.push(`${at}: ${r.all.spooled} deliveries went to the spool (Redis slower than ACK_BUDGET_MS)`);
    if (r.achievedRate < opts.rate * 0.98)
      warnings.push(`${at}: achieved ${f(r.achievedRate, 0)} req/s, below ${opts.rate}`);
    if (r.generatorElu > 0.8)
      warnings.push(`${at}: generator event loop ${f(r.generatorElu * 100, 0)}% busy: it may be the bottleneck`);
    if (r.measured.non2xx + r.measured.errors + r.measured.unfinished > 0) {
      warnings.push(
        `${at}: non-2xx/errors: ${JSON.stringify({ status: r.measured.statusCodes, errors: r.measured.errorCodes, unfinished: r.measured.unfinished })}`,
      );
    }
    const window = r.timeline.filter((t) => t.atS >= 0);
    const means = window.map((t) => t.meanMs).sort((a, b) => a - b);
    const typical = means[Math.floor(means.length / 2)] ?? 0;
    const first = window[0]?.meanMs ?? 0;
    if (first > 10 && first > 5 * typical) {
      warnings.push(
        `${at}: mean latency ${f(first)} ms in the first 0.5 s vs ${f(typical)} ms typical: a backlog carried over from the warm-up`,
      );
    }
    if (r.all.notQueued > 0) warnings.push(`${at}: ${r.all.notQueued} answers said "queued":false`);
  }
  for (const r of m.saturation) {
    if (r.non2xx + r.errors + r.timeouts > 0)
      warnings.push(
        `${where('saturation', r)}: non-2xx/errors: ${JSON.stringify({ status: r.statusCodes, errors: r.errors, timeouts: r.timeouts })}`,
      );
  }
  const all: [Phase, SaturationRun | FixedRateRun][] = [
    ...m.saturation.map((r): [Phase, SaturationRun] => ['saturation', r]),
    ...m.fixedRate.map((r): [Phase, FixedRateRun] => ['fixed-rate', r]),
  ];
  for (const [phase, r] of all) {
    if (r.cpu.other > QUIET_PCT)
      warnings.push(
        `${where(phase, r)}: ${f(r.cpu.other, 0)}% of a core used by other work during the run: figures disturbed`,
      );
    if (r.attempt > 1) warnings.push(`${where(phase, r)}: measured ${r.attempt} times (earlier runs disturbed)`);
    if (r.writes.ok === false) warnings.push(`${where(phase, r)}: writes check failed: ${r.writes.note}`);
  }
  return warnings;
}

/** What the report needs besides the measurements. */
export interface ReportInput {
  env: MachineInfo;
  redisVersion: string;
  busyBeforePct: number;
  opts: Options;
  m: Measurements;
  sat: SaturationSummary[];
  fix: FixedRateSummary[];
  ratios: Record<string, RatioSummary>;
}

/** The tables of both phases, the ratios and the generator check, as lines. */
export function measurementReport(input: ReportInput): string[] {
  const { env, redisVersion, busyBeforePct, opts, m, sat, fix, ratios } = input;
  const rounds = opts.rounds;
  const out: string[] = [];
  out.push('');
  out.push(
    `Ingest benchmark — node ${env.node}, nproc ${env.nproc}, ${env.cpuModel}, redis ${redisVersion}, ${env.date}`,
  );
  out.push(
    `commit ${env.commit}${env.srcDirty ? ' (src/ has uncommitted changes)' : ''}; Redis: AOF everysec, no RDB, noeviction; one fresh server process and an empty Redis per run`,
  );
  out.push(`machine busy before start: ${f(busyBeforePct, 0)}% of a core (foreign load)`);
  out.push(
    `${rounds} round(s) per phase, each measuring every target once in a rotated order; figures are medians across rounds`,
  );
  out.push('');
  out.push(
    `Saturation (closed loop): autocannon, ${opts.connections} connections, pipelining 1, ${opts.burstS} s bursts after a ${opts.warmupS} s warm-up; latency of 2xx, ms`,
  );
  out.push(
    table(
      [
        'target',
        'acks/s',
        'jobs/s',
        'p50',
        'p99',
        'p99.9',
        'max',
        'non2xx',
        'errors',
        'cpu% srv',
        'redis',
        'gen',
        'other',
        'writes check',
        'acks/s by round',
        'jobs/s by round',
      ],
      sat.map((s) => [
        s.target,
        f(s.rps, 0),
        f(s.writesPerS, 0),
        f(s.latency.p50),
        f(s.latency.p99),
        f(s.latency.p999),
        f(s.latency.max),
        String(s.non2xxTotal),
        String(s.errorsTotal),
        f(s.cpu.server, 0),
        f(s.cpu.redis, 0),
        f(s.cpu.generator, 0),
        f(s.cpu.other, 0),
        writesCell(s.writes),
        joinRounds(s.rpsByRound, 0),
        joinRounds(s.writesPerSByRound, 0),
      ]),
    ),
  );
  out.push('');
  out.push(
    `Fixed rate (open loop): ${opts.rate} req/s for ${opts.durationS} s (after the ${opts.warmupS} s closed-loop warm-up and ${opts.openWarmupS} s at the rate), ` +
      `undici Pool ${opts.openConnections} connections, separate process; latency from intended start, ms (svc = from actual send, lag = send − intended)`,
  );
  out.push(
    table(
      [
        'target',
        'achieved/s',
        'p50',
        'p99',
        'p99.9',
        'max',
        'svc p99',
        'lag p99',
        'non2xx',
        'errors',
        'cpu% srv',
        'redis',
        'gen',
        'other',
        'gen ELU',
        'writes check',
        'p99 by round',
      ],
      fix.map((s) => [
        s.target,
        f(s.achievedRate, 0),
        f(s.latency.p50),
        f(s.latency.p99),
        f(s.latency.p999),
        f(s.latency.max),
        f(s.serviceP99),
        f(s.dispatchLagP99),
        String(s.non2xxTotal),
        String(s.errorsTotal),
        f(s.cpu.server, 0),
        f(s.cpu.redis, 0),
        f(s.cpu.generator, 0),
        f(s.cpu.other, 0),
        f(s.generatorElu),
        writesCell(s.writes),
        joinRounds(s.p99ByRound, 1),
      ]),
    ),
  );
  out.push(
    `Each figure is the median of the ${rounds} rounds' figures (each column on its own); non2xx and errors are totals over the rounds.`,
  );
  out.push(
    'acks/s: 2xx answers ÷ burst time. jobs/s: acknowledged ÷ seconds from the burst start until the last job (floor: list',
  );
  out.push(
    'entry) was in Redis, its count polled until it stopped growing and any spool drained; equal to acks/s when written before the 200.',
  );
  out.push(
    'cpu%: % of one core during the measured window; other = the rest of the machine (foreign load, unattributed kernel time).',
  );
  out.push(
    'writes check: rounds in which jobs (listener, naive) or LPUSHed entries (floor) added to Redis matched the 2xx answers. Saturation',
  );
  out.push(
    'counts the warm-up too and may exceed by the requests in flight when autocannon stopped; fixed rate must match exactly.',
  );

  out.push('');
  out.push(`Ratios: median of the ${rounds} per-round ratios (each from measurements of the same round), min–max`);
  for (const r of Object.values(ratios)) {
    const range = rounds > 1 ? `  (rounds ${f(r.min, 3)}–${f(r.max, 3)})` : '';
    let verdict = '';
    if (r.target?.min !== undefined) verdict = `  (target ≥ ${r.target.min}: ${r.met ? 'met' : 'NOT met'})`;
    if (r.target?.max !== undefined) verdict = `  (target ≤ ${r.target.max}: ${r.met ? 'met' : 'NOT met'})`;
    out.push(`  ${r.label.padEnd(58)} ${f(r.median, 3)}${range}${verdict}`);
  }

  const bareFixed = byRound(m.fixedRate.filter((r) => r.target === 'bare'));
  if (bareFixed.length > 0) {
    const by = (pick: (r: FixedRateRun) => number, digits: number) => joinRounds(bareFixed.map(pick), digits);
    out.push('');
    out.push(
      `Generator check against bare, by round: achieved ${by((r) => r.achievedRate, 0)} of ${opts.rate} req/s, ` +
        `CPU ${by((r) => r.generatorCpuPct, 0)}% of a core, event loop ${by((r) => r.generatorElu * 100, 0)}% busy, ` +
        `dispatch lag p99 ${by((r) => r.dispatchLag.p99, 2)} ms`,
    );
  }
  return out;
}
