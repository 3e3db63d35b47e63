/**
 * Failovers under load: the listener (REDIS_WAIT_REPLICAS 0 or 1) takes `failoverRate` deliveries/s in open loop for
 * `failoverS` seconds while, in the middle, its master changes: `SENTINEL FAILOVER` or kill -9 of the master on a
 * Sentinel group, kill -9 of the queue's master on a Cluster (then the killed node restarts, as a replica of the new
 * master: without a replica WAIT 1 confirms nothing, and the spool drains only once it is back). Each run on a fresh
 * topology. Once the listener's spool has drained, the jobs are read where the queue lives now, and every acknowledged
 * delivery (2xx, unique body) is looked for: `lost` = acknowledged without a job, `duplicated` = jobs beyond one per
 * delivery.
 */
import { runOpenLoop } from '../lib/load.ts';
import type { OpenLoopResult } from '../lib/open-loop.ts';
import { settledJobBodies, spoolDrained, startListener } from '../lib/service.ts';
import type { LatencySummary } from '../lib/stats.ts';
import { FAILOVER_RUNS, type TopologiesOptions } from './options.ts';
import { CLUSTER_QUEUE_KEY, startTopology, type Topology } from './topology.ts';

export const FAULTS = ['SENTINEL FAILOVER', 'kill -9 master', 'kill -9 queue master, restart'] as const;
export type Fault = (typeof FAULTS)[number];

export interface FailoverRun {
  topology: 'sentinel' | 'cluster';
  fault: Fault;
  waitReplicas: number;
  sent: number;
  acknowledged: number;
  spooled: number;
  non2xx: number;
  /** Network errors and requests left unanswered. */
  errors: number;
  /** 2xx answers of the measured window (the fault is in its middle), ms from the intended start. */
  latency: LatencySummary;
  /** Seconds from the fault until the topology had settled (a new master with a replica, agreed by every node). */
  faultS: number;
  /** Whether the listener's spool was empty again within the limit, and seconds from the end of the load until then. */
  drained: boolean;
  drainS: number;
  jobs: number;
  lost: number;
  duplicated: number;
  /** Jobs of deliveries not answered 2xx (the write made it, the answer did not): not a loss. */
  unacknowledgedJobs: number;
  /** The first lost deliveries' relatedid. */
  lostIds: number[];
  /** What the listener wrote if it died on its own during the run, else null. */
  listenerDied: string | null;
}

/** Provokes `fault`; resolves once the topology has settled. */
async function provoke(topology: Topology, fault: Fault): Promise<void> {
  const { group, cluster } = topology;
  if (fault === 'SENTINEL FAILOVER' && group) await group.failover();
  else if (fault === 'kill -9 master' && group) await group.killMaster();
  else if (fault === 'kill -9 queue master, restart' && cluster) {
    const old = await cluster.masterOf(CLUSTER_QUEUE_KEY);
    await cluster.killMasterOf(CLUSTER_QUEUE_KEY);
    const restarted = cluster.restart(old);
    topology.track(); // the node's new process, spawned by now: killed at exit even if that comes before it rejoins
    await restarted;
  } else throw new Error(`${fault} does not apply to ${topology.kind}`);
}

const relatedId = (rawBody: string) => Number(/"relatedid":"(\d+)"/.exec(rawBody)?.[1]);

/** The load, the fault in its middle, and the jobs read back once the listener's spool has drained. */
async function underFault(
  topology: Topology,
  listenerUrl: string,
  run: Pick<FailoverRun, 'fault' | 'waitReplicas'>,
  opts: TopologiesOptions,
  idBase: number,
): Promise<Omit<FailoverRun, 'topology' | 'fault' | 'waitReplicas' | 'listenerDied'>> {
  const windowS = opts.failoverS;
  const label = `listener on ${topology.kind}, ${run.fault}, REDIS_WAIT_REPLICAS=${run.waitReplicas}`;
  let timer: NodeJS.Timeout | undefined;
  let faultDone: Promise<number> | null = null;
  let result: OpenLoopResult;
  try {
    ({ result } = await runOpenLoop({
      url: listenerUrl,
      rate: opts.failoverRate,
      durationS: windowS,
      warmupS: 1,
      idBase,
      // Enough that the generator never queues requests itself, even if answers stall for two seconds.
      connections: Math.ceil(opts.failoverRate * 2),
      extraArgs: ['--list-acked', '--timeout', '30'],
      label,
      limitS: windowS + 90,
      onWindow: () => {
        timer = setTimeout(
          () => {
            const t0 = performance.now();
            faultDone = provoke(topology, run.fault).then(() => (performance.now() - t0) / 1000);
            faultDone.catch(() => undefined); // awaited below
          },
          (windowS * 1000) / 2,
        );
      },
    }));
  } finally {
    clearTimeout(timer);
  }
  if (faultDone === null) throw new Error(`${label}: the load ended before the fault`);
  const faultS = await (faultDone as Promise<number>);
  const loadEnd = performance.now();
  const drained = await spoolDrained(listenerUrl, 60_000);
  const drainS = (performance.now() - loadEnd) / 1000;
  const acked = new Set(result.acked ?? []);
  const { queue, close } = await topology.openQueue();
  let bodies: string[];
  try {
    bodies = await settledJobBodies(queue, acked.size, 30_000);
  } finally {
    await close();
  }
  const ids = new Set(bodies.map(relatedId));
  const lost = [...acked].filter((id) => !ids.has(id));
  return {
    sent: result.all.sent,
    acknowledged: acked.size,
    spooled: result.all.spooled,
    non2xx: result.all.non2xx,
    errors: result.all.errors + result.all.unfinished,
    latency: result.latency,
    faultS,
    drained,
    drainS,
    jobs: bodies.length,
    lost: lost.length,
    duplicated: bodies.length - new Set(bodies).size,
    unacknowledgedJobs: [...ids].filter((id) => !acked.has(id)).length,
    lostIds: lost.slice(0, 20),
  };
}

/** One run on a fresh topology and listener, both stopped after. */
async function failoverOnce(
  kind: FailoverRun['topology'],
  fault: Fault,
  waitReplicas: number,
  opts: TopologiesOptions,
  idBase: number,
): Promise<FailoverRun> {
  const topology = await startTopology(kind);
  try {
    const env = { ...topology.env(), REDIS_WAIT_REPLICAS: String(waitReplicas) };
    const listener = await startListener(env, `listener on ${kind}`);
    let figures: Awaited<ReturnType<typeof underFault>>;
    let listenerDied: string | null;
    try {
      figures = await underFault(topology, listener.url, { fault, waitReplicas }, opts, idBase);
    } finally {
      listenerDied = await listener.stop();
    }
    return { topology: kind, fault, waitReplicas, ...figures, listenerDied };
  } finally {
    await topology.destroy();
  }
}

/** Sentinel: SENTINEL FAILOVER and kill -9, each with WAIT 0 and 1; Cluster: kill -9 and restart, WAIT 0 and 1. */
export async function measureFailovers(opts: TopologiesOptions): Promise<FailoverRun[]> {
  const plan: [FailoverRun['topology'], Fault][] = [
    ['sentinel', 'SENTINEL FAILOVER'],
    ['sentinel', 'kill -9 master'],
    ['cluster', 'kill -9 queue master, restart'],
  ];
  const runs: FailoverRun[] = [];
  for (const [kind, fault] of plan) {
    for (const waitReplicas of [0, 1]) {
      process.stderr.write(
        `bench: topologies failover [${runs.length + 1}/${FAILOVER_RUNS}] ${kind}, ${fault}, WAIT ${waitReplicas} ...`,
      );
      const run = await failoverOnce(kind, fault, waitReplicas, opts, (runs.length + 1) * 100_000_000);
      runs.push(run);
      process.stderr.write(
        ` ${run.acknowledged} acknowledged, ${run.lost} lost, ${run.duplicated} duplicated, ${run.non2xx} non-2xx\n`,
      );
    }
  }
  return runs;
}
