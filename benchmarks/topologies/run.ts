/**
 * The whole topology benchmark (see the header of benchmarks/topologies.ts): steady state, then failovers, the report
 * and bench-results/topologies-<timestamp>.json. Also the last phase of `npm run bench`.
 */
import { spawnSync } from 'node:child_process';
import { machineInfo } from '../lib/machine.ts';
import { minutes, writeResults } from '../lib/report.ts';
import { type FailoverRun, measureFailovers } from './failover.ts';
import { estimateS, type TopologiesOptions } from './options.ts';
import { defectsOf, ratioToStandalone, topologiesReport, warningsOf } from './report.ts';
import { measureSteady, type SteadyRun } from './steady.ts';

export interface TopologiesOutcome {
  report: string[];
  /** Deliveries acknowledged and lost although REDIS_WAIT_REPLICAS ≥ 1: each one a defect. */
  defects: string[];
  warnings: string[];
  file: string;
}

function redisVersion(): string {
  const bin = process.env.REDIS_SERVER_BIN ?? 'redis-server';
  const out = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout ?? '';
  return /v=(\S+)/.exec(out)?.[1] ?? 'unknown';
}

export async function runTopologiesBenchmark(opts: TopologiesOptions): Promise<TopologiesOutcome> {
  const startedAt = performance.now();
  const machine = machineInfo();
  process.stderr.write(
    `bench: Redis topologies (${opts.parts.join(' and ')}), about ${minutes(estimateS(opts))} on a quiet machine\n`,
  );
  const incidents: string[] = [];
  const steady: SteadyRun[] = opts.parts.includes('steady') ? await measureSteady(opts, incidents) : [];
  const failovers: FailoverRun[] = opts.parts.includes('failover') ? await measureFailovers(opts) : [];
  const defects = defectsOf(failovers);
  const warnings = warningsOf(steady, failovers, incidents);
  const version = redisVersion();
  const wallTimeS = (performance.now() - startedAt) / 1000;
  const report = topologiesReport({ machine, redisVersion: version, opts, steady, failovers, defects, warnings });
  const file = writeResults('topologies', machine.date, {
    machine: { ...machine, redisVersion: version },
    options: opts,
    wallTimeS,
    steady: steady.map((r) => ({ ...r, ratioToStandalone: ratioToStandalone(r, steady) })),
    failovers,
    defects,
    warnings,
  });
  report.push('', `Topologies wall time ${minutes(wallTimeS)}`, `Results written to ${file}`);
  return { report, defects, warnings, file };
}
