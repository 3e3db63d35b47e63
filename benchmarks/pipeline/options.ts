/** The pipeline benchmark's options, from the environment (see the header of benchmarks/pipeline.ts). */
import { numberOption } from '../lib/options.ts';

export interface PipelineOptions {
  events: number;
  connections: number;
  rate: number;
  seconds: number;
  workerConcurrency: number;
  waitS: number;
  /** Seconds to wait at most, before starting, for foreign load to drop below QUIET_PCT. */
  quietWaitS: number;
  databaseUrl: string;
  /** `split`: `listen` and `work`, two processes; `start`: one process running both. */
  mode: 'split' | 'start';
}

export function pipelineOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): PipelineOptions {
  const num = (name: string, def: number, min: number) => numberOption(name, undefined, env[name], def, min);
  const databaseUrl = env.BENCH_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
  let host: string;
  try {
    host = new URL(databaseUrl).hostname;
  } catch {
    throw new Error('BENCH_DATABASE_URL is not a URL');
  }
  // The benchmark creates and drops a schema and loads the server: never anywhere but this machine.
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(host))
    throw new Error(`BENCH_DATABASE_URL must point to 127.0.0.1 (got host "${host}")`);
  const mode = env.BENCH_PIPELINE_MODE || 'split';
  if (mode !== 'split' && mode !== 'start') throw new Error(`BENCH_PIPELINE_MODE must be split or start (got ${mode})`);
  return {
    mode,
    events: Math.round(num('BENCH_PIPELINE_EVENTS', 20_000, 1)),
    connections: Math.round(num('BENCH_PIPELINE_CONNECTIONS', 50, 1)),
    rate: num('BENCH_PIPELINE_RATE', 500, 1),
    seconds: num('BENCH_PIPELINE_SECONDS', 10, 1),
    workerConcurrency: Math.round(num('BENCH_WORKER_CONCURRENCY', 50, 1)),
    waitS: num('BENCH_PIPELINE_WAIT', 120, 1),
    quietWaitS: num('BENCH_QUIET_WAIT', 120, 0),
    databaseUrl,
  };
}
