/**
 * Shared helpers of the benchmarks: free ports, a private redis-server, child-process bookkeeping, Sellsy-like
 * request bodies, percentiles, per-process CPU time, waiting for a quiet machine, the open-loop generator as a child
 * process, and the machine's description.
 *
 * Self-contained on purpose: benchmarks do not import test code, nor the service's source (the signature is
 * recomputed here, which also cross-checks the service's verification).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { freePort } from './lib/redis-server.ts';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export { freePort };

export const WEBHOOK_PATH = '/webhook/sellsy';
export const FLOOR_KEY = 'bench:floor';

// ---------------------------------------------------------------------------------------------------------------
// Bodies

/**
 * A Sellsy-like `docslog` delivery, unique per `id` (the listener deduplicates on the raw body, so repeated bodies
 * would be folded into one job and measure a different path).
 */
export function sellsyBody(id: number): string {
  const timestamp = Math.floor(Date.now() / 1000);
  return (
    `{"eventType":"docslog","event":"step","relatedtype":"invoice","relatedid":"${id}",` +
    `"ownertype":"staff","ownerid":"1084","corpid":"929","timestamp":"${timestamp}"}`
  );
}

/** Sellsy's signature: lowercase hex of sha1(key + raw body). Not an HMAC. */
export function sellsySignature(key: string, body: string): string {
  return createHash('sha1').update(key, 'utf8').update(body, 'utf8').digest('hex');
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentiles of latencies in milliseconds (sorts its argument in place). */
export function summarize(values: Float64Array): LatencySummary {
  const n = values.length;
  if (n === 0) return { count: 0, p50: NaN, p90: NaN, p99: NaN, p999: NaN, max: NaN, mean: NaN };
  values.sort();
  const at = (q: number) => values[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))] as number;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += values[i] as number;
  return {
    count: n,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    p999: at(0.999),
    max: values[n - 1] as number,
    mean: sum / n,
  };
}

/** An append-only list of doubles without per-sample allocation. */
export class Samples {
  private buf = new Float64Array(1 << 16);
  length = 0;
  push(v: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = v;
  }
  values(): Float64Array {
    return this.buf.slice(0, this.length);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

/** Every child this process started; all are SIGKILLed when it exits, whatever the reason. */
const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of children) if (isRunning(child)) child.kill('SIGKILL');
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\nbench: ${signal}, killing children\n`);
      process.exit(130);
    });
  }
}

/** A fresh directory under the system's temporary one, removed at exit whatever the reason (or by removeTempDir). */
export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  installExitHook();
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

export function track(child: ChildProcess): ChildProcess {
  installExitHook();
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child has exited. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (!isRunning(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Keeps the last few KB a child wrote on a stream, for error messages. */
export function tail(stream: NodeJS.ReadableStream | null, limit = 4000): () => string {
  let text = '';
  stream?.on('data', (chunk: Buffer) => {
    text = (text + chunk.toString('utf8')).slice(-limit);
  });
  return () => text;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `GET url` until it answers 200, the child dies, or `timeoutMs` passes. */
export async function waitForHttp200(
  url: string,
  child: ChildProcess,
  timeoutMs: number,
  describe: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!isRunning(child))
      throw new Error(`child exited (${child.exitCode ?? child.signalCode}) before ${url} was ready\n${describe()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer 200 within ${timeoutMs} ms\n${describe()}`);
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// CPU time of a process (Linux /proc), to tell who used the machine's cores during a run.

let clockTicks = 100;
function setClockTicks(ticks: number): void {
  if (Number.isFinite(ticks) && ticks > 0) clockTicks = ticks;
}

/** User + system CPU seconds consumed so far by `pid`, or NaN where /proc is unavailable. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which is in parentheses and may contain spaces).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return NaN;
  }
}

/** CPU seconds the whole machine spent busy so far (all cores; /proc/stat), or NaN. */
function machineBusySeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    // cpu  user nice system idle iowait irq softirq steal guest guest_nice
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const busy = (v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0) + (v[5] ?? 0) + (v[6] ?? 0) + (v[7] ?? 0);
    return busy / clockTicks;
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// A private redis-server

export interface PrivateRedis {
  url: string;
  port: number;
  pid: number | undefined;
  client: Redis;
  /** FLUSHALL, then rewrite the AOF so every run starts from an empty dataset and a small AOF. */
  reset(): Promise<void>;
  /** Sends a signal to the redis-server process (SIGSTOP / SIGCONT to freeze and thaw it). */
  signal(signal: NodeJS.Signals): void;
  destroy(): Promise<void>;
}

/**
 * Starts `redis-server` on a free 127.0.0.1 port in a temporary directory, with production-like durability:
 * AOF on, `appendfsync everysec`, no RDB snapshots, `noeviction`. Never the machine's shared Redis.
 */
export async function startPrivateRedis(bin = process.env.REDIS_SERVER_BIN ?? 'redis-server'): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = makeTempDir('sellsy-webhooks-bench-redis-');
  const child = track(
    spawn(
      bin,
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--daemonize',
        'no',
        '--appendonly',
        'yes',
        '--appendfsync',
        'everysec',
        '--save',
        '',
        '--maxmemory-policy',
        'noeviction',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    ),
  );
  const stderr = tail(child.stderr);
  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (!isRunning(child))
      throw new Error(`${bin} exited (${child.exitCode ?? child.signalCode}) on port ${port}\n${stderr()}`);
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      if ((await probe.ping()) === 'PONG') break;
    } catch {
      // not up yet
    } finally {
      probe.disconnect();
    }
    if (Date.now() > deadline) throw new Error(`${bin} did not answer on port ${port} within 10 s`);
    await sleep(25);
  }
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  return {
    url,
    port,
    pid: child.pid,
    client,
    async reset() {
      await client.flushall();
      // Fails only when a rewrite is already running; then waiting for it is enough.
      await client.bgrewriteaof().catch(() => undefined);
      const until = Date.now() + 30_000;
      for (;;) {
        const info = await client.info('persistence');
        if (/aof_rewrite_in_progress:0/.test(info) && /aof_rewrite_scheduled:0/.test(info)) return;
        if (Date.now() > until) throw new Error('Redis AOF rewrite did not finish within 30 s');
        await sleep(20);
      }
    },
    signal(signal: NodeJS.Signals) {
      if (isRunning(child)) child.kill(signal);
    },
    async destroy() {
      client.disconnect();
      await stopChild(child, 3000);
      removeTempDir(dir);
    },
  };
}

/** A clean environment for a child process: nothing from the caller's shell (such as a SELLSY_SIGN_KEY) leaks in. */
export function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'LANG'])
    if (process.env[name] !== undefined) env[name] = process.env[name];
  return env;
}

/** A figure for a table: fixed digits, `-` when not a number. */
export const f = (v: number, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : '-');

/** A plain-text table: the first column left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

// ---------------------------------------------------------------------------------------------------------------
// CPU use over a window, a quiet machine, the machine's description

/**
 * CPU used between construction and `read`, in % of one core: by each named process, by each group of processes
 * found when read (`groups`: pid → CPU seconds so far, e.g. every PostgreSQL backend), and by the rest of the
 * machine (`other`: foreign load, kernel time charged to nobody; tens of % means a disturbed run).
 */
export class CpuMeter<K extends string, G extends string = never> {
  private readonly t0 = performance.now();
  private readonly machine0 = machineBusySeconds();
  private readonly start: Record<string, number> = {};
  private readonly groupStart: Record<string, Map<number, number>> = {};
  constructor(
    private readonly pids: Record<K, number | undefined>,
    private readonly groups: Record<G, () => Map<number, number>> = {} as Record<G, () => Map<number, number>>,
  ) {
    for (const [name, pid] of Object.entries<number | undefined>(pids)) this.start[name] = cpuSeconds(pid);
    for (const [name, sample] of Object.entries<() => Map<number, number>>(groups)) this.groupStart[name] = sample();
  }
  read(): Record<K | G | 'other', number> {
    const wall = (performance.now() - this.t0) / 1000;
    const use: Record<string, number> = {};
    for (const [name, pid] of Object.entries<number | undefined>(this.pids)) {
      use[name] = ((cpuSeconds(pid) - (this.start[name] as number)) / wall) * 100;
    }
    // Group members that started during the window count from 0; those that ended are missed.
    for (const [name, sample] of Object.entries<() => Map<number, number>>(this.groups)) {
      let seconds = 0;
      for (const [pid, cpu] of sample()) seconds += cpu - (this.groupStart[name]?.get(pid) ?? 0);
      use[name] = (seconds / wall) * 100;
    }
    const ours = Object.values(use)
      .filter(Number.isFinite)
      .reduce((a, b) => a + b, 0);
    const machine = ((machineBusySeconds() - this.machine0) / wall) * 100;
    return { ...use, other: Math.max(0, machine - ours) } as Record<K | G | 'other', number>;
  }
}

/** Machine-wide CPU use over `ms`, in % of one core. */
export async function busyPct(ms: number): Promise<number> {
  const before = machineBusySeconds();
  await sleep(ms);
  return ((machineBusySeconds() - before) * 100_000) / ms;
}

/** Below this machine-wide CPU use (% of one core) while we are idle, the machine counts as quiet. */
export const QUIET_PCT = 25;

/**
 * Waits (at most `maxS`) until the machine is quiet while nothing of ours runs: on a shared 2-core machine another
 * job (a test suite, a build) can halve a target's throughput and make the comparison meaningless.
 */
export async function waitForQuiet(maxS: number): Promise<{ ok: boolean; busy: number }> {
  const deadline = Date.now() + maxS * 1000;
  let announced = false;
  for (;;) {
    const busy = await busyPct(500);
    if (busy < QUIET_PCT) {
      if (announced) process.stderr.write(' quiet now\n');
      return { ok: true, busy };
    }
    if (Date.now() > deadline) {
      if (announced) process.stderr.write(' giving up\n');
      return { ok: false, busy };
    }
    if (!announced)
      process.stderr.write(`bench: machine busy (${busy.toFixed(0)}% of a core), waiting up to ${maxS} s ...`);
    announced = true;
  }
}

/** Node, cores, CPU model, commit: printed with every result. Also reads the clock tick that cpuSeconds needs. */
export function machineInfo() {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  let nproc = String(availableParallelism());
  try {
    nproc = execFileSync('nproc', { encoding: 'utf8' }).trim();
  } catch {
    // keep availableParallelism()
  }
  let commit = 'unknown';
  let srcDirty = false;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    srcDirty =
      execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
  } catch {
    // not a git checkout
  }
  try {
    setClockTicks(Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()));
  } catch {
    // assume 100
  }
  return { node: process.version, nproc, cpuModel: model, date: new Date().toISOString(), commit, srcDirty };
}

// ---------------------------------------------------------------------------------------------------------------
/** What benchmarks/open-loop.ts prints (its last line, JSON). */
export interface OpenLoopResult {
  rate: number;
  durationS: number;
  warmupS: number;
  connections: number;
  /** Requests due in the measured window. */
  scheduled: number;
  /** Measured responses with a 2xx status ÷ (last measured response − window start). */
  achievedRate: number;
  /** Latency from the intended start time, 2xx responses of the measured window, ms. */
  latency: LatencySummary;
  /** Latency from the moment the request was handed to undici, ms. */
  serviceTime: LatencySummary;
  /** Actual dispatch − intended start, ms (the generator's own timer slack). */
  dispatchLag: LatencySummary;
  measured: Counts;
  /** Warm-up and measured window together. */
  all: Counts;
  /** With --mark-from/--mark-to: the requests due in that part of the window. */
  marked?: { latency: LatencySummary; counts: Counts };
  /** Generator CPU time over the measured window, % of one core. */
  generatorCpuPct: number;
  /** Event-loop utilisation of the generator over the measured window (1 = saturated). */
  generatorElu: number;
  /**
   * 2xx answers in 500 ms slices of intended start time, from the start of the warm-up (atS < 0) to the end of the
   * window (atS from 0): count, mean and max latency (ms). Shows stalls and backlogs.
   */
  timeline: { atS: number; answered: number; meanMs: number; maxMs: number }[];
}

export interface Counts {
  sent: number;
  ok2xx: number;
  non2xx: number;
  errors: number;
  /** Requests still unanswered when the generator gave up waiting. */
  unfinished: number;
  statusCodes: Record<string, number>;
  errorCodes: Record<string, number>;
  /** 200 answers whose body says the delivery was not queued (`"queued":false`). */
  notQueued: number;
  /** 200 answers whose body says the delivery was kept in the listener's local spool (`"spooled":true`). */
  spooled: number;
}

// The open-loop generator (benchmarks/open-loop.ts) as a child process

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
