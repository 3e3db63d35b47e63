/** The fan-out benchmark's options, from argv and the environment (see the header of benchmarks/fanout.ts). */
import { numberOption } from '../lib/options.ts';

export interface FanOutOptions {
  /** Destination counts, one run each, in this order; empty: no fan-out phase. */
  destinations: number[];
  rate: number;
  seconds: number;
  warmupS: number;
  workerConcurrency: number;
  /** Seconds to wait at most, after the load, for every destination to receive every acknowledged delivery. */
  waitS: number;
  /** Seconds to wait at most, before starting, for foreign load to drop below QUIET_PCT. */
  quietWaitS: number;
  /** A directory: the worker runs with `--cpu-prof` and writes its profile there; null: no profile. */
  cpuProfDir: string | null;
}

/** `1,3,10` → [1, 3, 10]; `0` or `none` → [] (no fan-out phase). */
export function parseDestinationCounts(raw: string, name: string): number[] {
  const text = raw.trim();
  if (text === '0' || text === 'none') return [];
  const counts = text.split(',').map((part) => Number(part.trim()));
  if (counts.length === 0 || counts.some((n) => !Number.isInteger(n) || n < 1 || n > 50))
    throw new Error(`${name} must list destination counts from 1 to 50, such as 1,3,10 (or 0 for none; got "${raw}")`);
  return counts;
}

export function fanOutOptionsFromEnv(
  destinationsArg: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): FanOutOptions {
  const num = (name: string, def: number, min: number, integer = false) =>
    numberOption(name, undefined, env[name], def, min, integer);
  const raw = destinationsArg ?? env.BENCH_FANOUT_DESTINATIONS ?? '1,3,10';
  return {
    destinations: parseDestinationCounts(
      raw,
      destinationsArg === undefined ? 'BENCH_FANOUT_DESTINATIONS' : '--destinations',
    ),
    rate: num('BENCH_FANOUT_RATE', 500, 1),
    seconds: num('BENCH_FANOUT_SECONDS', 15, 1),
    warmupS: num('BENCH_FANOUT_WARMUP', 2, 0),
    workerConcurrency: num('BENCH_WORKER_CONCURRENCY', 50, 1, true),
    waitS: num('BENCH_FANOUT_WAIT', 120, 1),
    quietWaitS: num('BENCH_QUIET_WAIT', 120, 0),
    cpuProfDir: env.BENCH_FANOUT_CPU_PROF || null,
  };
}
