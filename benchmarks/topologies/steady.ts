/**
 * The listener in steady state on each topology: saturation (autocannon) then fixed rate (open loop) on one listener
 * process per topology and REDIS_WAIT_REPLICAS value, with the ingest benchmark's measurements and write checks
 * (ingest/measure.ts), the jobs counted where the queue lives.
 */
import {
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
  /** Deliveries answered from the spool during the fixed-rate run (Redis or WAIT slower than the ack budget). */
  fixedRateSpooled: number;
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

async function measureOne(
  topology: Topology,
  waitReplicas: number,
  opts: TopologiesOptions,
  idBase: number,
  incidents: string[],
): Promise<SteadyRun> {
  const label = `listener on ${LABELS[topology.kind]}, REDIS_WAIT_REPLICAS=${waitReplicas}`;
  const listener = await startListener({ ...topology.env(), REDIS_WAIT_REPLICAS: String(waitReplicas) }, label);
  try {
    const measured: Measured = {
      label,
      url: listener.url,
      countWrites: () => countJobs(topology, listener.url),
      spooled: () => spooledSoFar(listener.url),
      meter: (generator) => new CpuMeter({ server: listener.pid, generator }, { redis: () => topology.cpu() }),
    };
    const load: LoadOptions = {
      connections: opts.connections,
      warmupS: opts.warmupS,
      durationS: opts.durationS,
      rate: opts.rate,
      openWarmupS: opts.openWarmupS,
      openConnections: opts.openConnections,
    };
    const sat = await saturation(measured, load, idBase);
    // The same process, warm from the saturation run: only the open-loop warm-up at the rate.
    const spooledBefore = (await measured.spooled()) ?? 0;
    const fix = await fixedRate(measured, { ...load, warmupS: 0, durationS: opts.openDurationS }, idBase + 50_000_000);
    const spooledAfter = (await measured.spooled()) ?? 0;
    for (const [phase, cpu] of [
      ['saturation', sat.cpu],
      ['fixed rate', fix.cpu],
    ] as const) {
      if (cpu.other > QUIET_PCT)
        incidents.push(`${label}, ${phase}: ${f(cpu.other, 0)}% of a core used by other work: figures disturbed`);
    }
    return {
      topology: topology.kind,
      waitReplicas,
      saturation: sat,
      fixedRate: fix,
      fixedRateSpooled: spooledAfter - spooledBefore,
    };
  } finally {
    const died = await listener.stop();
    if (died) incidents.push(died);
  }
}

/** Every topology, each with REDIS_WAIT_REPLICAS=0 and (where it has a replica) 1; every run on an emptied Redis. */
export async function measureSteady(opts: TopologiesOptions, incidents: string[]): Promise<SteadyRun[]> {
  const runs: SteadyRun[] = [];
  let index = 0;
  for (const kind of KINDS) {
    const topology = await startTopology(kind);
    try {
      for (const waitReplicas of topology.replicas > 0 ? [0, 1] : [0]) {
        index++;
        await topology.reset();
        const quiet = await waitForQuiet(opts.quietWaitS);
        const where = `${LABELS[kind]}, WAIT ${waitReplicas}`;
        if (!quiet.ok) incidents.push(`${where}: started on a busy machine (${f(quiet.busy, 0)}% of a core)`);
        process.stderr.write(`bench: topologies [${index}/${STEADY_RUNS}] ${where} ...`);
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
