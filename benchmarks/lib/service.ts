/**
 * The processes under test: the service itself (`node dist/src/cli.js listen|work|start`, as built by
 * `npm run build`) and the reference servers (benchmarks/reference-servers.ts), each its own tracked child process;
 * and what the benchmarks read back from them (the listener's spool count, the jobs in a queue).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Queue } from 'bullmq';
import { ROOT, tail, track } from './processes.ts';

export interface Service {
  child: ChildProcess;
  /** The last lines it wrote on stdout (when kept) and stderr. */
  output(): string;
}

/**
 * Starts `sellsy-webhooks <command>` from dist/. `keepStdout`: its stdout is kept for error messages; otherwise it
 * is discarded (the listener logs one line per delivery at info, as in production).
 */
export function startService(
  command: 'listen' | 'work' | 'start',
  env: NodeJS.ProcessEnv,
  keepStdout = false,
): Service {
  const child = track(
    spawn(process.execPath, [join(ROOT, 'dist/src/cli.js'), command], {
      cwd: ROOT,
      env,
      stdio: ['ignore', keepStdout ? 'pipe' : 'ignore', 'pipe'],
    }),
  );
  const out = tail(child.stdout);
  const err = tail(child.stderr);
  return { child, output: () => `${out()}${err()}`.trim() };
}

/** Starts benchmarks/reference-servers.ts `mode` (bare, floor or naive); it exits when our end of its stdin closes. */
export function startReferenceServer(mode: 'bare' | 'floor' | 'naive', env: NodeJS.ProcessEnv): Service {
  const child = track(
    spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'benchmarks/reference-servers.ts'), mode], {
      cwd: ROOT,
      env,
      stdio: ['pipe', 'ignore', 'pipe'],
    }),
  );
  const err = tail(child.stderr);
  return { child, output: () => err().trim() };
}

/** The listener's count of deliveries answered from its spool so far (its /metrics). */
export async function spooledSoFar(listenerUrl: string): Promise<number> {
  const metrics = await (await fetch(`${listenerUrl}/metrics`)).text();
  return Number(/^sellsy_webhooks_deliveries_total\{outcome="spooled"\} (\d+)/m.exec(metrics)?.[1] ?? Number.NaN);
}

/** Jobs in `queue`, every state. */
export async function jobCount(queue: Queue): Promise<number> {
  const counts = await queue.getJobCounts();
  return Object.values(counts).reduce((a, b) => a + b, 0);
}
