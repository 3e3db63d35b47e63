/** The ingest benchmark's options (argv or environment; see the header of benchmarks/ingest.ts) and its targets. */
import { parseArgs } from 'node:util';
import { numberOption as num } from '../lib/options.ts';

export const TARGETS = ['bare', 'floor', 'listener', 'listener-signed', 'naive'] as const;
/** Measured unless --targets says otherwise. `naive` (the original design, a reference for the targets) is opt-in. */
export const DEFAULT_TARGETS = ['bare', 'floor', 'listener', 'listener-signed'];
export type TargetName = (typeof TARGETS)[number];

export interface Options {
  durationS: number;
  warmupS: number;
  connections: number;
  rate: number;
  openConnections: number;
  targets: TargetName[];
  build: boolean;
  /** Seconds to wait, before each run, for foreign load to drop below QUIET_PCT. */
  quietWaitS: number;
  /** Seconds of open-loop traffic at the fixed rate before the measured window. */
  openWarmupS: number;
  /** Times a run disturbed by foreign load is repeated. */
  retries: number;
  /** Times each phase is run; every round measures every target once, in a rotated order. */
  rounds: number;
  /** Rounds of the Redis-freeze fault scenario (benchmarks/redis-freeze.ts) at the end; 0 skips it. */
  freezeRounds: number;
  /** The whole-pipeline benchmark (benchmarks/pipeline.ts) after the freeze scenario; BENCH_PIPELINE=0 skips it. */
  pipeline: boolean;
  /** The Redis topology benchmark (benchmarks/topologies.ts) at the very end; BENCH_TOPOLOGIES=0 skips it. */
  topologies: boolean;
}

export function readOptions(): Options {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      rate: { type: 'string' },
      'open-connections': { type: 'string' },
      targets: { type: 'string' },
      'skip-build': { type: 'boolean' },
      'quiet-wait': { type: 'string' },
      retries: { type: 'string' },
      'open-warmup': { type: 'string' },
      rounds: { type: 'string' },
      'freeze-rounds': { type: 'string' },
    },
  });
  const env = process.env;
  const targets = (values.targets ?? env.BENCH_TARGETS ?? DEFAULT_TARGETS.join(','))
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  for (const t of targets) {
    if (!(TARGETS as readonly string[]).includes(t))
      throw new Error(`unknown target "${t}" (known: ${TARGETS.join(', ')})`);
  }
  return {
    durationS: num('duration', values.duration, env.BENCH_DURATION, 10, 1),
    warmupS: num('warmup', values.warmup, env.BENCH_WARMUP, 2, 0),
    connections: Math.round(num('connections', values.connections, env.BENCH_CONNECTIONS, 50, 1)),
    rate: num('rate', values.rate, env.BENCH_RATE, 2000, 1),
    openConnections: Math.round(
      num('open-connections', values['open-connections'], env.BENCH_OPEN_CONNECTIONS, 128, 1),
    ),
    // Round 1 follows TARGETS, whatever order was asked for; later rounds rotate it (roundOrder).
    targets: TARGETS.filter((t) => targets.includes(t)),
    build: !(values['skip-build'] || env.BENCH_SKIP_BUILD === '1'),
    quietWaitS: num('quiet-wait', values['quiet-wait'], env.BENCH_QUIET_WAIT, 120, 0),
    openWarmupS: num('open-warmup', values['open-warmup'], env.BENCH_OPEN_WARMUP, 5, 0),
    retries: Math.round(num('retries', values.retries, env.BENCH_RETRIES, 2, 0)),
    rounds: Math.round(num('rounds', values.rounds, env.BENCH_ROUNDS, 3, 1)),
    freezeRounds: Math.round(num('freeze-rounds', values['freeze-rounds'], env.BENCH_FREEZE_ROUNDS, 1, 0)),
    pipeline: env.BENCH_PIPELINE !== '0',
    topologies: env.BENCH_TOPOLOGIES !== '0',
  };
}
