/**
 * The orchestrator's side of benchmarks/fanout/sinks.ts: starts it as a tracked child process (killed at exit
 * whatever the reason), reads its ports, asks for its counts and its records, one JSON line per question.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { baseEnv, isRunning, ROOT, stopChild, tail, track } from '../lib/processes.ts';
import type { Arrival } from './results.ts';

export interface Sinks {
  child: ChildProcess;
  /** One per destination, on 127.0.0.1. */
  ports: number[];
  /** Requests each sink received so far. */
  counts(): Promise<number[]>;
  /** Every request each sink received. */
  dump(): Promise<Arrival[][]>;
  stop(): Promise<void>;
}

const ANSWER_MS = 20_000;

export async function startSinks(count: number): Promise<Sinks> {
  const child = track(
    spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'benchmarks/fanout/sinks.ts'), String(count)], {
      cwd: ROOT,
      env: baseEnv(),
      stdio: ['pipe', 'pipe', 'pipe'],
    }),
  );
  const stderr = tail(child.stderr);
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const buffered: string[] = [];
  const waiting: ((line: string) => void)[] = [];
  lines.on('line', (line) => {
    const waiter = waiting.shift();
    if (waiter) waiter(line);
    else buffered.push(line);
  });
  const next = (what: string) =>
    new Promise<string>((resolve, reject) => {
      const line = buffered.shift();
      if (line !== undefined) return resolve(line);
      const timer = setTimeout(() => {
        const state = isRunning(child) ? 'no answer' : `exited (${child.exitCode ?? child.signalCode})`;
        reject(new Error(`the sinks process: ${state} to "${what}" within ${ANSWER_MS} ms\n${stderr()}`));
      }, ANSWER_MS);
      waiting.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  const ask = async <T>(command: string): Promise<T> => {
    child.stdin?.write(`${command}\n`);
    return JSON.parse(await next(command)) as T;
  };
  let ports: number[];
  try {
    ({ ports } = JSON.parse(await next('start')) as { ports: number[] });
  } catch (err) {
    await stopChild(child, 1000);
    throw err;
  }
  return {
    child,
    ports,
    counts: async () => (await ask<{ counts: number[] }>('counts')).counts,
    dump: async () => (await ask<{ sinks: Arrival[][] }>('dump')).sinks,
    stop: () => stopChild(child, 2000),
  };
}
