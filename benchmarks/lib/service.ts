/**
 * The processes under test: the service itself (`node dist/src/cli.js listen|work|start`, as built by
 * `npm run build`) and the reference servers (benchmarks/reference-servers.ts), each its own tracked child process;
 * and what the benchmarks read back from them (the listener's spool count, the jobs in a queue).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Queue } from 'bullmq';
import {
  baseEnv,
  isRunning,
  makeTempDir,
  ROOT,
  removeTempDir,
  sleep,
  stopChild,
  tail,
  track,
  waitForHttp200,
} from './processes.ts';
import { freePort } from './redis-server.ts';

export interface Service {
  child: ChildProcess;
  /** The last lines it wrote on stdout (when kept) and stderr. */
  output(): string;
}

/**
 * Starts `sellsy-webhooks <command>` from dist/. `keepStdout`: its stdout is kept for error messages; otherwise it
 * is discarded (the listener logs one line per delivery at info, as in production). `nodeArgs`: options of node
 * itself, such as `--cpu-prof` (which NODE_OPTIONS refuses).
 */
export function startService(
  command: 'listen' | 'work' | 'start',
  env: NodeJS.ProcessEnv,
  keepStdout = false,
  nodeArgs: readonly string[] = [],
): Service {
  const child = track(
    spawn(process.execPath, [...nodeArgs, join(ROOT, 'dist/src/cli.js'), command], {
      cwd: ROOT,
      env,
      stdio: ['ignore', keepStdout ? 'pipe' : 'ignore', 'pipe'],
    }),
  );
  const out = tail(child.stdout);
  const err = tail(child.stderr);
  return { child, output: () => `${out()}${err()}`.trim() };
}

/**
 * Starts benchmarks/reference-servers.ts `mode` (bare, floor, naive or naive-nolog); it exits when our end of its
 * stdin closes.
 */
export function startReferenceServer(
  mode: 'bare' | 'floor' | 'naive' | 'naive-nolog',
  env: NodeJS.ProcessEnv,
): Service {
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

export interface RunningListener {
  url: string;
  pid: number | undefined;
  /** Stops it and removes its spool; returns a description if it had died on its own before that, else null. */
  stop(): Promise<string | null>;
}

/**
 * Starts `sellsy-webhooks listen` on a free 127.0.0.1 port with its own spool directory and `env` (where Redis is, and
 * any other setting) over a clean environment; resolves once its /readyz answers 200.
 */
export async function startListener(env: NodeJS.ProcessEnv, label: string): Promise<RunningListener> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const spoolDir = makeTempDir('sellsy-webhooks-bench-spool-');
  const service = startService('listen', {
    ...baseEnv(),
    PORT: String(port),
    HOST: '127.0.0.1',
    SPOOL_DIR: spoolDir,
    ...env,
  });
  const { child } = service;
  try {
    await waitForHttp200(`${url}/readyz`, child, 20_000, () => `${label} stderr:\n${service.output()}`);
  } catch (err) {
    await stopChild(child, 1000);
    removeTempDir(spoolDir);
    throw err;
  }
  return {
    url,
    pid: child.pid,
    stop: stopper(service, label, spoolDir),
  };
}

/**
 * Stops `service` and removes its directory `dir`; the function returns a description (named `label`, with the end of
 * its output) if the service had died on its own before, else null.
 */
export function stopper(service: Service, label: string, dir: string): () => Promise<string | null> {
  return async () => {
    const { child } = service;
    const died = isRunning(child)
      ? null
      : `${label} died during the run (${child.exitCode ?? child.signalCode}): ${service.output().slice(-1500)}`;
    await stopChild(child, 5000);
    removeTempDir(dir);
    return died;
  };
}

/**
 * Waits until the listener's spool is empty (its /readyz), so that every delivery it acknowledged from the spool is a
 * job; false if it is not within `timeoutMs`.
 */
export async function spoolDrained(listenerUrl: string, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ready = (await (await fetch(`${listenerUrl}/readyz`)).json()) as { spool?: { depth: number } | null };
    if ((ready.spool?.depth ?? 0) === 0) return true;
    if (Date.now() > until) return false;
    await sleep(100);
  }
}

/** The raw body of every job in `queue`, whatever its state: one per job. */
export async function jobBodies(queue: Queue): Promise<string[]> {
  const jobs = await queue.getJobs(['waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized']);
  return jobs.map((job) => job.data.rawBody as string);
}

/**
 * The jobs' raw bodies once they stop changing (a spool drains in the background): polled until at least `atLeast`
 * distinct bodies are there and nothing changed for a second, or `limitMs` passed.
 */
export async function settledJobBodies(queue: Queue, atLeast: number, limitMs: number): Promise<string[]> {
  let bodies = await jobBodies(queue);
  const until = Date.now() + limitMs;
  let stableSince = Date.now();
  while (Date.now() < until) {
    await sleep(200);
    const again = await jobBodies(queue);
    if (again.length !== bodies.length) stableSince = Date.now();
    bodies = again;
    if (new Set(bodies).size >= atLeast && Date.now() - stableSince > 1000) break;
  }
  return bodies;
}

/** Jobs in `queue`, every state. */
export async function jobCount(queue: Queue): Promise<number> {
  const counts = await queue.getJobCounts();
  return Object.values(counts).reduce((a, b) => a + b, 0);
}
