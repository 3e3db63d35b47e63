/**
 * The ingest benchmark's summaries: per target, the median of each figure across rounds; and every ratio computed
 * within a round, then summarized across rounds.
 */
import { type LatencySummary, median, medianOf, sum } from '../lib/stats.ts';
import type { Cpu, FixedRateRun, Measurements, RunInfo, SaturationRun, WriteCheck } from './measure.ts';
import type { Options, TargetName } from './options.ts';

interface LatencyMedians {
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

const latencyMedians = (latencies: LatencySummary[]): LatencyMedians => ({
  p50: median(latencies.map((l) => l.p50)),
  p99: median(latencies.map((l) => l.p99)),
  p999: median(latencies.map((l) => l.p999)),
  max: median(latencies.map((l) => l.max)),
});

const cpuMedians = (cpus: Cpu[]): Cpu => ({
  server: median(cpus.map((c) => c.server)),
  redis: median(cpus.map((c) => c.redis)),
  generator: median(cpus.map((c) => c.generator)),
  other: median(cpus.map((c) => c.other)),
});

/** Rounds whose writes check passed, out of `of`; null for bare (nothing to check). */
export interface WritesTally {
  ok: number;
  of: number;
}
function writesTally(checks: WriteCheck[]): WritesTally | null {
  const checked = checks.filter((c) => c.ok !== null);
  return checked.length === 0 ? null : { ok: checked.filter((c) => c.ok).length, of: checked.length };
}

/** One target's saturation figures: medians across rounds, except the counts (totals). */
export interface SaturationSummary {
  target: TargetName;
  rounds: number;
  /** Acknowledgements per second. */
  rps: number;
  rpsByRound: number[];
  /** Writes (jobs, list entries) per second until the last was in Redis; NaN for bare. */
  writesPerS: number;
  writesPerSByRound: number[];
  /** Rounds whose writes settled (every acknowledged one in Redis within the limit), out of `of`; null for bare. */
  settled: WritesTally | null;
  latency: LatencyMedians;
  cpu: Cpu;
  non2xxTotal: number;
  errorsTotal: number;
  writes: WritesTally | null;
}

export interface FixedRateSummary {
  target: TargetName;
  rounds: number;
  achievedRate: number;
  latency: LatencyMedians;
  p99ByRound: number[];
  serviceP99: number;
  dispatchLagP99: number;
  cpu: Cpu;
  generatorElu: number;
  non2xxTotal: number;
  errorsTotal: number;
  writes: WritesTally | null;
}

export const byRound = <T extends RunInfo>(runs: T[]) => [...runs].sort((a, b) => a.round - b.round);

export function summarizeSaturation(target: TargetName, all: SaturationRun[]): SaturationSummary | null {
  const runs = byRound(all.filter((r) => r.target === target));
  if (runs.length === 0) return null;
  return {
    target,
    rounds: runs.length,
    rps: medianOf(runs, (r) => r.rps),
    rpsByRound: runs.map((r) => r.rps),
    writesPerS: medianOf(runs, (r) => r.sustained?.writesPerS ?? NaN),
    writesPerSByRound: runs.map((r) => r.sustained?.writesPerS ?? NaN),
    settled: runs.some((r) => r.sustained !== null)
      ? { ok: runs.filter((r) => r.sustained?.settled).length, of: runs.filter((r) => r.sustained !== null).length }
      : null,
    latency: latencyMedians(runs.map((r) => r.latency)),
    cpu: cpuMedians(runs.map((r) => r.cpu)),
    non2xxTotal: sum(runs.map((r) => r.non2xx)),
    errorsTotal: sum(runs.map((r) => r.errors + r.timeouts)),
    writes: writesTally(runs.map((r) => r.writes)),
  };
}

export function summarizeFixedRate(target: TargetName, all: FixedRateRun[]): FixedRateSummary | null {
  const runs = byRound(all.filter((r) => r.target === target));
  if (runs.length === 0) return null;
  return {
    target,
    rounds: runs.length,
    achievedRate: medianOf(runs, (r) => r.achievedRate),
    latency: latencyMedians(runs.map((r) => r.latency)),
    p99ByRound: runs.map((r) => r.latency.p99),
    serviceP99: medianOf(runs, (r) => r.serviceTime.p99),
    dispatchLagP99: medianOf(runs, (r) => r.dispatchLag.p99),
    cpu: cpuMedians(runs.map((r) => r.cpu)),
    generatorElu: medianOf(runs, (r) => r.generatorElu),
    non2xxTotal: sum(runs.map((r) => r.measured.non2xx)),
    errorsTotal: sum(runs.map((r) => r.measured.errors + r.measured.unfinished)),
    writes: writesTally(runs.map((r) => r.writes)),
  };
}

export interface RatioSummary {
  label: string;
  /** Median of the per-round ratios. */
  median: number;
  min: number;
  max: number;
  /** The ratio of each round (index 0 = round 1); null where a round lacks one of the two measurements. */
  byRound: (number | null)[];
  target?: { min?: number; max?: number };
  met?: boolean;
}

/**
 * Every ratio is computed within a round (both measurements taken minutes apart at most), then summarized across
 * rounds: a ratio of two figures measured at different times would include the machine's drift in between.
 */
export function computeRatios(m: Measurements, opts: Options): Record<string, RatioSummary> {
  const sat = (t: TargetName, round: number) => m.saturation.find((r) => r.target === t && r.round === round);
  const fix = (t: TargetName, round: number) => m.fixedRate.find((r) => r.target === t && r.round === round);
  const defs: {
    key: string;
    label: string;
    of: (round: number) => [number | undefined, number | undefined];
    target?: { min?: number; max?: number };
  }[] = [
    {
      key: 'listenerOverBareRps',
      label: 'listener acks/s ÷ bare acks/s',
      of: (k) => [sat('listener', k)?.rps, sat('bare', k)?.rps],
      target: { min: 0.45 },
    },
    {
      key: 'listenerSignedOverBareRps',
      label: 'listener-signed acks/s ÷ bare acks/s',
      of: (k) => [sat('listener-signed', k)?.rps, sat('bare', k)?.rps],
      target: { min: 0.45 },
    },
    {
      key: 'naiveOverBareRps',
      label: 'naive (original design) acks/s ÷ bare acks/s',
      of: (k) => [sat('naive', k)?.rps, sat('bare', k)?.rps],
    },
    {
      key: 'listenerOverNaiveRps',
      label: 'listener acks/s ÷ naive acks/s (target 2)',
      of: (k) => [sat('listener', k)?.rps, sat('naive', k)?.rps],
      target: { min: 1.0 },
    },
    {
      key: 'listenerOverNaiveJobs',
      label: 'listener jobs/s ÷ naive jobs/s (target 3)',
      of: (k) => [sat('listener', k)?.sustained?.writesPerS, sat('naive', k)?.sustained?.writesPerS],
      target: { min: 0.85 },
    },
    {
      key: 'listenerOverNaiveP99',
      label: `listener p99 ÷ naive p99 at ${opts.rate} req/s (target 4)`,
      of: (k) => [fix('listener', k)?.latency.p99, fix('naive', k)?.latency.p99],
      target: { max: 1.25 },
    },
    {
      key: 'naiveNologOverNaiveRps',
      label: 'naive-nolog acks/s ÷ naive acks/s',
      of: (k) => [sat('naive-nolog', k)?.rps, sat('naive', k)?.rps],
    },
    {
      key: 'naiveNologOverNaiveP99',
      label: `naive-nolog p99 ÷ naive p99 at ${opts.rate} req/s`,
      of: (k) => [fix('naive-nolog', k)?.latency.p99, fix('naive', k)?.latency.p99],
    },
    {
      key: 'naiveOverFloorP99',
      label: `naive p99 ÷ floor p99 at ${opts.rate} req/s`,
      of: (k) => [fix('naive', k)?.latency.p99, fix('floor', k)?.latency.p99],
    },
    {
      key: 'floorOverBareRps',
      label: 'floor acks/s ÷ bare acks/s',
      of: (k) => [sat('floor', k)?.rps, sat('bare', k)?.rps],
    },
    {
      key: 'listenerOverFloorRps',
      label: 'listener acks/s ÷ floor acks/s',
      of: (k) => [sat('listener', k)?.rps, sat('floor', k)?.rps],
    },
    {
      key: 'listenerOverFloorP99',
      label: `listener p99 ÷ floor p99 at ${opts.rate} req/s`,
      of: (k) => [fix('listener', k)?.latency.p99, fix('floor', k)?.latency.p99],
      target: { max: 1.3 },
    },
    {
      key: 'listenerSignedOverFloorP99',
      label: `listener-signed p99 ÷ floor p99 at ${opts.rate} req/s`,
      of: (k) => [fix('listener-signed', k)?.latency.p99, fix('floor', k)?.latency.p99],
      target: { max: 1.3 },
    },
    {
      key: 'listenerOverFloorServiceP99',
      label: '  same, service time (from actual send)',
      of: (k) => [fix('listener', k)?.serviceTime.p99, fix('floor', k)?.serviceTime.p99],
    },
  ];
  const ratios: Record<string, RatioSummary> = {};
  for (const def of defs) {
    const perRound: (number | null)[] = [];
    for (let round = 1; round <= opts.rounds; round++) {
      const [a, b] = def.of(round);
      perRound.push(a === undefined || b === undefined ? null : a / b);
    }
    const values = perRound.filter((v): v is number => v !== null && Number.isFinite(v));
    if (values.length === 0) continue;
    const med = median(values);
    let met: boolean | undefined;
    if (def.target?.min !== undefined) met = med >= def.target.min;
    if (def.target?.max !== undefined) met = med <= def.target.max;
    ratios[def.key] = {
      label: def.label,
      median: med,
      min: Math.min(...values),
      max: Math.max(...values),
      byRound: perRound,
      ...(def.target ? { target: def.target, met } : {}),
    };
  }
  return ratios;
}
