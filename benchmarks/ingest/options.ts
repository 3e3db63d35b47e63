/** The ingest benchmark's options (argv or environment; see the header of benchmarks/ingest.ts) and its targets. */
import { parseArgs } from 'node:util';
import { numberOption as num } from '../lib/options.ts';
import { FREEZE_ROUNDS } from '../redis-freeze/scenario.ts';

/**
 * Every target, in the order of round 1 (later rounds rotate it). `naive` comes right before `listener`: the ratios
 * of the issue-14 targets compare those two, so they are measured one after the other in every round.
 */
export const TARGETS = ['bare', 'floor', 'naive', 'listener', 'listener-signed', 'naive-nolog'] as const;
/** Measured unless --targets says otherwise: all of them (naive is the reference of the issue-14 targets). */
export const DEFAULT_TARGETS: readonly string[] = TARGETS;
export type TargetName = (typeof TARGETS)[number];

export interface Options {
  /** Seconds of the saturation phase's measured burst (after its warm-up). */
  burstS: number;
  /** Seconds of the fixed-rate phase's measured window (after its warm-ups). */
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
  /** Rounds of the Redis-freeze fault scenario (benchmarks/redis-freeze.ts) after the ingest phases; 0 skips it. */
  freezeRounds: number;
  /** The whole-pipeline benchmark (benchmarks/pipeline.ts) after the freeze scenario; BENCH_PIPELINE=0 skips it. */
  pipeline: boolean;
  /** The Redis topology benchmark (benchmarks/topologies.ts) at the very end; BENCH_TOPOLOGIES=0 skips it. */
  topologies: boolean;
}

export function readOptions(): Options {
  const { values } = parseArgs({
    options: {
      burst: { type: 'string' },
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
    burstS: num('burst', values.burst, env.BENCH_BURST, 4, 1),
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
    freezeRounds: Math.round(num('freeze-rounds', values['freeze-rounds'], env.BENCH_FREEZE_ROUNDS, FREEZE_ROUNDS, 0)),
    pipeline: env.BENCH_PIPELINE !== '0',
    topologies: env.BENCH_TOPOLOGIES !== '0',
  };
}
