/**
 * Load generation: autocannon's closed loop (in this process), a closed loop through an undici Pool that posts a
 * fixed number of deliveries, and the open-loop generator run as a child process (benchmarks/open-loop.ts).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Pool } from 'undici';
import { sellsyBody, sellsySignature, WEBHOOK_PATH } from './bodies.ts';
import type { OpenLoopResult } from './open-loop.ts';
import { baseEnv, ROOT, tail, track } from './processes.ts';

/** autocannon's requests: one POST each, a new body every time (relatedid = counter.next++), signed with `signKey`. */
export function autocannonRequests(signKey: string | undefined, counter: { next: number }) {
  return [
    {
      method: 'POST',
      path: WEBHOOK_PATH,
      headers: { 'content-type': 'application/json' },
      setupRequest(request: { method: string; path: string; headers: Record<string, string>; body?: string | Buffer }) {
        const body = sellsyBody(counter.next++);
        request.body = body;
        if (signKey) request.headers['x-webhook-signature'] = sellsySignature(signKey, body);
        return request;
      },
    },
  ];
}

export interface PostResult {
  ok2xx: number;
  non2xx: number;
  errors: number;
  seconds: number;
}

/** POSTs bodies with relatedid `from` … `from + n − 1`, `connections` at a time; an error past `limitS`. */
export async function post(
  url: string,
  from: number,
  n: number,
  connections: number,
  limitS: number,
): Promise<PostResult> {
  const pool = new Pool(url, { connections, pipelining: 1, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const result: PostResult = { ok2xx: 0, non2xx: 0, errors: 0, seconds: 0 };
  let next = from;
  const end = from + n;
  const t0 = performance.now();
  const deadline = t0 + limitS * 1000;
  const loop = async () => {
    while (next < end) {
      if (performance.now() > deadline) throw new Error(`posting ${n} deliveries took more than ${limitS} s`);
      const body = sellsyBody(next++);
      try {
        const res = await pool.request({
          method: 'POST',
          path: WEBHOOK_PATH,
          headers: { 'content-type': 'application/json' },
          body,
        });
        await res.body.dump();
        if (res.statusCode >= 200 && res.statusCode < 300) result.ok2xx++;
        else result.non2xx++;
      } catch {
        result.errors++;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(connections, n) }, loop));
    result.seconds = (performance.now() - t0) / 1000;
  } finally {
    await pool.destroy().catch(() => undefined);
  }
  return result;
}

export interface OpenLoopRun<C> {
  result: OpenLoopResult;
  /** From `meter`: CPU over the measured window, from `@window` until the result (while /proc still knows it). */
  cpu: C | null;
}

/**
 * Runs benchmarks/open-loop.ts against `url` and returns its result. `onWindow` runs when its measured window starts
 * (it says `@window` on stderr); `meter` is then built and read when the result is printed (at once with no warm-up).
 */
export async function runOpenLoop<C = never>(opts: {
  url: string;
  rate: number;
  durationS: number;
  warmupS: number;
  idBase?: number;
  connections?: number;
  /** More arguments of open-loop.ts (`--timeout`, `--mark-from`, …). */
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** Named in the error when the generator fails. */
  label?: string;
  /** Killed past this; default warm-up + duration + 40 s. */
  limitS?: number;
  onWindow?: () => void;
  meter?: (generatorPid: number | undefined) => { read(): C };
}): Promise<OpenLoopRun<C>> {
  const args = [
    '--import',
    'tsx',
    join(ROOT, 'benchmarks/open-loop.ts'),
    '--url',
    opts.url,
    '--rate',
    String(opts.rate),
    '--duration',
    String(opts.durationS),
    '--warmup',
    String(opts.warmupS),
    ...(opts.connections === undefined ? [] : ['--connections', String(opts.connections)]),
    ...(opts.idBase === undefined ? [] : ['--id-base', String(opts.idBase)]),
    ...(opts.extraArgs ?? []),
  ];
  const child = track(
    spawn(process.execPath, args, { cwd: ROOT, env: opts.env ?? baseEnv(), stdio: ['pipe', 'pipe', 'pipe'] }),
  );
  let meter: { read(): C } | null = opts.meter && opts.warmupS === 0 ? opts.meter(child.pid) : null;
  let cpu: C | null = null;
  let stdout = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
    if (cpu === null && meter !== null && stdout.includes('\n')) cpu = meter.read();
  });
  const stderr = tail(child.stderr);
  let windowStarted = false;
  child.stderr?.on('data', (chunk: Buffer) => {
    if (windowStarted || !chunk.toString('utf8').includes('@window')) return;
    windowStarted = true;
    if (meter === null && opts.meter) meter = opts.meter(child.pid);
    opts.onWindow?.();
  });
  const limitS = opts.limitS ?? opts.warmupS + opts.durationS + 40;
  const killer = setTimeout(() => child.kill('SIGKILL'), limitS * 1000);
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(killer);
  if (code !== 0) {
    throw new Error(
      `open-loop generator failed (exit ${code})${opts.label ? ` against ${opts.label}` : ''}:\n${stderr()}`,
    );
  }
  return { result: JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as OpenLoopResult, cpu };
}
