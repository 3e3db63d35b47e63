/** The topology benchmark's report: the steady-state table with each topology's ratio to standalone, the failovers. */
import type { MachineInfo } from '../lib/machine.ts';
import { f, table } from '../lib/report.ts';
import type { FailoverRun } from './failover.ts';
import type { TopologiesOptions } from './options.ts';
import type { SteadyRun } from './steady.ts';
import { LABELS } from './topology.ts';

/** Saturation acknowledgements/s of `run` ÷ standalone's (REDIS_WAIT_REPLICAS=0) in the same run. */
export function ratioToStandalone(run: SteadyRun, runs: SteadyRun[]): number {
  const standalone = runs.find((r) => r.topology === 'standalone' && r.waitReplicas === 0);
  return standalone ? run.saturation.rps / standalone.saturation.rps : Number.NaN;
}

function steadyReport(opts: TopologiesOptions, runs: SteadyRun[]): string[] {
  const rows = runs.map((r) => [
    LABELS[r.topology],
    String(r.waitReplicas),
    f(r.saturation.rps, 0),
    f(ratioToStandalone(r, runs)),
    f(r.saturation.latency.p99),
    String(r.saturation.spooled ?? '-'),
    f(r.fixedRate.achievedRate, 0),
    f(r.fixedRate.latency.p50),
    f(r.fixedRate.latency.p99),
    f(r.fixedRate.latency.max),
    String(r.fixedRate.measured.spooled),
    String(r.saturation.non2xx + r.saturation.errors + r.fixedRate.all.non2xx + r.fixedRate.all.errors),
    `${f(r.fixedRate.cpu.server, 0)}/${f(r.fixedRate.cpu.redis, 0)}/${f(r.fixedRate.cpu.other, 0)}`,
    r.saturation.writes.ok && r.fixedRate.writes.ok ? 'ok' : 'MISMATCH',
  ]);
  const header = ['topology', 'WAIT', 'acks/s', '÷ standalone', 'p99', 'spooled'];
  header.push(`at ${opts.rate}/s`, 'p50', 'p99', 'max', 'spooled', 'non2xx', 'cpu% srv/redis/other', 'writes');
  return [
    `Steady state: saturation = autocannon, ${opts.connections} connections, ${opts.durationS} s after ${opts.warmupS} s of warm-up;`,
    `fixed rate = ${opts.rate} req/s open loop (${opts.openConnections} connections, separate process), ${opts.openDurationS} s after the same warm-up and ${opts.openWarmupS} s at the rate,`,
    'each on an emptied Redis and a fresh listener; latency of 2xx in ms (fixed rate: from the intended start). WAIT = REDIS_WAIT_REPLICAS.',
    table(header, rows),
    '÷ standalone: saturation acknowledgements/s over standalone with WAIT 0, measured minutes apart in this run.',
    'spooled: deliveries answered from the local spool (Redis or its WAIT slower than the ack budget), then queued;',
    'saturation: warm-up included; fixed rate: of the measured window.',
    'cpu%: during the fixed-rate window, % of one core: the listener, every Redis process (Sentinels too), the rest.',
    'writes: every 2xx is a job (counted where the queue lives once the spool drained; saturation may count a few more,',
    'in flight when autocannon stopped).',
  ];
}

function failoverReport(opts: TopologiesOptions, runs: FailoverRun[]): string[] {
  const rows = runs.map((r) => [
    r.topology,
    r.fault,
    String(r.waitReplicas),
    String(r.acknowledged),
    String(r.spooled),
    String(r.non2xx),
    String(r.errors),
    f(r.latency.p99),
    f(r.latency.max),
    f(r.faultS, 1),
    r.drained ? f(r.drainS, 1) : 'NOT drained',
    String(r.jobs),
    String(r.lost),
    String(r.duplicated),
  ]);
  const header = ['topology', 'fault', 'WAIT', 'acked', 'spooled', 'non2xx', 'errors', 'p99', 'max'];
  header.push('settle s', 'drain s', 'jobs', 'lost', 'dup');
  return [
    `Failovers: ${opts.failoverRate} req/s open loop for ${opts.failoverS} s (after 1 s), the fault at ${f(opts.failoverS / 2, 0)} s; fresh topology and listener per run`,
    table(header, rows),
    'p99, max: acknowledgement latency of the 2xx answers of the window, ms from the intended start.',
    'settle: seconds from the fault until a new master served with a replica linked (Cluster: the killed node restarted).',
    "drain: seconds from the end of the load until the listener's spool was empty. lost: acknowledged (2xx), no job on",
    "the new master; dup: jobs beyond one per delivery. With WAIT 0 a 200 is the master's word only: losses are expected.",
  ];
}

/** Defects: deliveries answered 2xx and lost while REDIS_WAIT_REPLICAS ≥ 1 asked for a replica's copy. */
export function defectsOf(failovers: FailoverRun[]): string[] {
  return failovers
    .filter((r) => r.waitReplicas >= 1 && r.lost > 0)
    .map(
      (r) =>
        `${r.topology}, ${r.fault}, REDIS_WAIT_REPLICAS=${r.waitReplicas}: ${r.lost} of ${r.acknowledged} acknowledged deliveries lost (relatedid ${r.lostIds.join(', ')})`,
    );
}

/** Everything else worth a look: failed checks, duplicates, a spool that did not drain, a listener that died. */
export function warningsOf(steady: SteadyRun[], failovers: FailoverRun[], incidents: string[]): string[] {
  const warnings = [...incidents];
  for (const r of steady) {
    const where = `${LABELS[r.topology]}, WAIT ${r.waitReplicas}`;
    for (const check of [r.saturation.writes, r.fixedRate.writes])
      if (check.ok === false) warnings.push(`${where}: writes check failed: ${check.note}`);
  }
  for (const r of failovers) {
    const where = `${r.topology}, ${r.fault}, WAIT ${r.waitReplicas}`;
    if (r.duplicated > 0) warnings.push(`${where}: ${r.duplicated} duplicated jobs`);
    if (!r.drained) warnings.push(`${where}: the spool was not empty ${f(r.drainS, 0)} s after the load`);
    if (r.listenerDied) warnings.push(`${where}: ${r.listenerDied}`);
  }
  return warnings;
}

export interface ReportInput {
  machine: MachineInfo;
  redisVersion: string;
  opts: TopologiesOptions;
  steady: SteadyRun[];
  failovers: FailoverRun[];
  defects: string[];
  warnings: string[];
}

export function topologiesReport(input: ReportInput): string[] {
  const { machine: m, redisVersion, opts, steady, failovers, defects, warnings } = input;
  const out = [
    `Redis topologies — node ${m.node}, nproc ${m.nproc}, ${m.cpuModel}, redis ${redisVersion}, ${m.date}`,
    `commit ${m.commit}${m.srcDirty ? ' (src/ has uncommitted changes)' : ''}; every Redis process AOF everysec, on 127.0.0.1, on the same cores as the listener and the load`,
  ];
  if (steady.length > 0) out.push('', ...steadyReport(opts, steady));
  if (failovers.length > 0) {
    out.push('', ...failoverReport(opts, failovers));
    const checked = failovers.filter((r) => r.waitReplicas >= 1);
    out.push(
      `With REDIS_WAIT_REPLICAS=1, acknowledged deliveries lost: ${checked.reduce((n, r) => n + r.lost, 0)} (must be 0): ${defects.length === 0 ? 'met' : 'NOT met'}`,
    );
  }
  if (defects.length > 0) out.push('', 'DEFECTS', ...defects.map((d) => `  ${d}`));
  if (warnings.length > 0) out.push('', 'Warnings', ...warnings.map((w) => `  ${w}`));
  return out;
}
