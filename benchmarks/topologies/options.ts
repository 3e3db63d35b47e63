/**
 * The topology benchmark's options: argv (`npm run bench:topologies -- --duration 4`) or the environment
 * (`BENCH_TOPOLOGIES_DURATION=4`, also when `npm run bench` runs it last), and its estimated duration.
 */
import { parseArgs } from 'node:util';
import { numberOption as num } from '../lib/options.ts';

export const PARTS = ['steady', 'failover'] as const;
export type Part = (typeof PARTS)[number];

export interface TopologiesOptions {
  /** Saturation: autocannon connections, warm-up and measured seconds. */
  connections: number;
  warmupS: number;
  durationS: number;
  /** Fixed rate: requests/s, open-loop connections, warm-up at the rate and measured seconds. */
  rate: number;
  openConnections: number;
  openWarmupS: number;
  openDurationS: number;
  /** Failovers: requests/s and seconds of load, the fault in the middle. */
  failoverRate: number;
  failoverS: number;
  /** Seconds to wait, before each steady-state run, for foreign CPU load to drop. */
  quietWaitS: number;
  parts: Part[];
}

/** Each numeric option: its flag, its environment variable, default, floor and whether it is an integer. */
const NUMBERS = {
  connections: ['connections', 'BENCH_TOPOLOGIES_CONNECTIONS', 50, 1, true],
  warmupS: ['warmup', 'BENCH_TOPOLOGIES_WARMUP', 2, 0, false],
  durationS: ['duration', 'BENCH_TOPOLOGIES_DURATION', 4, 1, false],
  rate: ['rate', 'BENCH_TOPOLOGIES_RATE', 2000, 1, false],
  openConnections: ['open-connections', 'BENCH_TOPOLOGIES_OPEN_CONNECTIONS', 128, 1, true],
  openWarmupS: ['open-warmup', 'BENCH_TOPOLOGIES_OPEN_WARMUP', 2, 0, false],
  openDurationS: ['open-duration', 'BENCH_TOPOLOGIES_OPEN_DURATION', 5, 1, false],
  failoverRate: ['failover-rate', 'BENCH_TOPOLOGIES_FAILOVER_RATE', 200, 1, false],
  failoverS: ['failover-duration', 'BENCH_TOPOLOGIES_FAILOVER_DURATION', 8, 4, false],
  quietWaitS: ['quiet-wait', 'BENCH_TOPOLOGIES_QUIET_WAIT', 30, 0, false],
} as const satisfies Record<
  Exclude<keyof TopologiesOptions, 'parts'>,
  readonly [string, string, number, number, boolean]
>;

/** From `args` (argv without the node and script paths) or else the environment; an error on a bad value. */
export function readTopologiesOptions(args: string[] = []): TopologiesOptions {
  const { values } = parseArgs({
    args,
    options: {
      ...Object.fromEntries(Object.values(NUMBERS).map(([flag]) => [flag, { type: 'string' as const }])),
      parts: { type: 'string' },
      'skip-build': { type: 'boolean' },
    },
  });
  const numbers = Object.fromEntries(
    Object.entries(NUMBERS).map(([key, [flag, env, def, min, integer]]) => [
      key,
      num(flag, (values as Record<string, string | undefined>)[flag], process.env[env], def, min, integer),
    ]),
  ) as Omit<TopologiesOptions, 'parts'>;
  const parts = (values.parts ?? process.env.BENCH_TOPOLOGIES_PARTS ?? PARTS.join(','))
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  for (const p of parts) if (!(PARTS as readonly string[]).includes(p)) throw new Error(`unknown part "${p}"`);
  return { ...numbers, parts: PARTS.filter((p) => parts.includes(p)) };
}

/** Whether the script was asked not to build (argv or BENCH_SKIP_BUILD=1). */
export function skipBuild(args: string[]): boolean {
  return args.includes('--skip-build') || process.env.BENCH_SKIP_BUILD === '1';
}

/** Steady-state runs: every topology with REDIS_WAIT_REPLICAS=0, and =1 where a replica exists. */
export const STEADY_RUNS = 7;
/** Failover runs: Sentinel (SENTINEL FAILOVER, kill -9) and Cluster (kill -9), each with WAIT 0 and 1. */
export const FAILOVER_RUNS = 6;

/** Seconds a quiet 2-core machine takes, from the overheads measured there (starts, settling, resets). */
export function estimateS(o: TopologiesOptions): number {
  const steady = STEADY_RUNS * (2 * o.warmupS + o.durationS + o.openWarmupS + o.openDurationS + 5) + 12;
  const failover = FAILOVER_RUNS * (o.failoverS + 1 + 5);
  return (o.parts.includes('steady') ? steady : 0) + (o.parts.includes('failover') ? failover : 0);
}
