/**
 * The listener in steady state on each topology and REDIS_WAIT_REPLICAS value: saturation (autocannon) and fixed rate
 * (open loop), each on an emptied Redis and a fresh listener process, with the ingest benchmark's measurements and
 * write checks (ingest/measure.ts), the jobs counted where the queue lives.
 */
import {
  type Cpu,
  type FixedRateFigures,
  fixedRate,
  type LoadOptions,
  type Measured,
  type SaturationFigures,
  saturation,
} from '../ingest/measure.ts';
import { CpuMeter, QUIET_PCT, waitForQuiet } from '../lib/machine.ts';
import { f } from '../lib/report.ts';
import { jobCount, spoolDrained, spooledSoFar, startListener } from '../lib/service.ts';
import { STEADY_RUNS, type TopologiesOptions } from './options.ts';
import { KINDS, LABELS, startTopology, type Topology, type TopologyKind } from './topology.ts';

export interface SteadyRun {
  topology: TopologyKind;
  waitReplicas: number;
  saturation: SaturationFigures;
  fixedRate: FixedRateFigures;
}

/** The jobs of the listener's queue, counted where it lives once its spool has drained (at most 30 s). */
async function countJobs(topology: Topology, listenerUrl: string): Promise<number> {
  await spoolDrained(listenerUrl, 30_000);
  const { queue, close } = await topology.openQueue();
  try {
    return await jobCount(queue);
  } finally {
    await close();
  }
}

/**
 * One phase on an emptied Redis and a fresh listener: saturation, or fixed rate after the same closed-loop warm-up.
 * Apart, as in `npm run bench`: the ~2 KB of AOF per job that a saturation run writes would otherwise start Redis's
 * automatic AOF rewrite (at 64 MB) on every data node during the fixed-rate window.
 */
async function measurePhase<T extends { cpu: Cpu }>(
  topology: Topology,
  waitReplicas: number,
  opts: TopologiesOptions,
  incidents: string[],
  phase: string,
  measure: (measured: Measured) => Promise<T>,
): Promise<T> {
  await topology.reset();
  const quiet = await waitForQuiet(opts.quietWaitS);
  const label = `listener on ${LABELS[topology.kind]}, REDIS_WAIT_REPLICAS=${waitReplicas}, ${phase}`;
  if (!quiet.ok) incidents.push(`${label}: started on a busy machine (${f(quiet.busy, 0)}% of a core)`);
  const listener = await startListener({ ...topology.env(), REDIS_WAIT_REPLICAS: String(waitReplicas) }, label);
  try {
    const measured: Measured = {
      label,
      url: listener.url,
      countWrites: () => countJobs(topology, listener.url),
      spooled: () => spooledSoFar(listener.url),
      meter: (generator) => new CpuMeter({ server: listener.pid, generator }, { redis: () => topology.cpu() }),
    };
    const figures = await measure(measured);
    if (figures.cpu.other > QUIET_PCT)
      incidents.push(`${label}: ${f(figures.cpu.other, 0)}% of a core used by other work: figures disturbed`);
    return figures;
  } finally {
    const died = await listener.stop();
    if (died) incidents.push(died);
  }
}

async function measureOne(
  topology: Topology,
  waitReplicas: number,
  opts: TopologiesOptions,
  idBase: number,
  incidents: string[],
): Promise<SteadyRun> {
  const load: LoadOptions = {
    connections: opts.connections,
    warmupS: opts.warmupS,
    durationS: opts.durationS,
    rate: opts.rate,
    openWarmupS: opts.openWarmupS,
    openConnections: opts.openConnections,
  };
  const sat = await measurePhase(topology, waitReplicas, opts, incidents, 'saturation', (m) =>
    saturation(m, load, idBase),
  );
  const fix = await measurePhase(topology, waitReplicas, opts, incidents, 'fixed rate', (m) =>
    fixedRate(m, { ...load, durationS: opts.openDurationS }, idBase + 50_000_000),
  );
  return { topology: topology.kind, waitReplicas, saturation: sat, fixedRate: fix };
}

/** Every topology, each with REDIS_WAIT_REPLICAS=0 and (where it has a replica) 1; every phase on an emptied Redis. */
export async function measureSteady(opts: TopologiesOptions, incidents: string[]): Promise<SteadyRun[]> {
  const runs: SteadyRun[] = [];
  let index = 0;
  for (const kind of KINDS) {
    const topology = await startTopology(kind);
    try {
      for (const waitReplicas of topology.replicas > 0 ? [0, 1] : [0]) {
        index++;
        process.stderr.write(`bench: topologies [${index}/${STEADY_RUNS}] ${LABELS[kind]}, WAIT ${waitReplicas} ...`);
        const run = await measureOne(topology, waitReplicas, opts, index * 100_000_000, incidents);
        runs.push(run);
        process.stderr.write(
          ` ${f(run.saturation.rps, 0)} req/s; at ${opts.rate}/s p99 ${f(run.fixedRate.latency.p99)} ms\n`,
        );
      }
    } finally {
      await topology.destroy();
    }
  }
  return runs;
}
