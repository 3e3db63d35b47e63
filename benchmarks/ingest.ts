/**
 * `npm run bench`: how fast does the listener acknowledge Sellsy webhooks, next to what is possible on this machine?
 *
 * Targets, each its own child process on a free 127.0.0.1 port, all against one private redis-server
 * (AOF on, appendfsync everysec, no RDB, noeviction; never 127.0.0.1:6379):
 *   listener         the real service, `node dist/src/cli.js listen`, default settings, no signing key
 *   listener-signed  the same with SELLSY_SIGN_KEY set and correctly signed bodies
 *   bare             minimal Fastify app answering 200 with no I/O: the ceiling
 *   floor            the same app doing one Redis LPUSH before its 200: the cheapest durable acknowledgement
 *
 * Two measurements per target, each on a fresh server process and an empty Redis (FLUSHALL + AOF rewrite):
 *   saturation  closed loop: autocannon (in this process, never in a server's) with N connections, pipelining 1,
 *               for the duration after a warm-up run; requests/s and latency percentiles.
 *   fixed rate  open loop: after the same closed-loop warm-up, benchmarks/open-loop.ts as a child process sends
 *               R requests/s on a fixed schedule (5 s unmeasured, then the duration); latency from each request's
 *               intended start (no coordinated omission).
 * After each run the jobs (listener) or list entries (floor) in Redis are counted and compared with the 2xx
 * answers: that proves the listener really wrote what it acknowledged.
 *
 * Bodies are Sellsy-like JSON, unique per request (the listener deduplicates on the raw body).
 * Options (argv or env): --duration/BENCH_DURATION s (10), --warmup/BENCH_WARMUP s (2),
 * --connections/BENCH_CONNECTIONS (50), --rate/BENCH_RATE req/s (2000), --open-connections/BENCH_OPEN_CONNECTIONS
 * (128), --targets/BENCH_TARGETS (listener,listener-signed,bare,floor... any subset), --skip-build/BENCH_SKIP_BUILD=1,
 * --quiet-wait/BENCH_QUIET_WAIT s (120: before each run, wait that long at most for foreign CPU load to drop),
 * --retries/BENCH_RETRIES (2: a run during which foreign load used > 25% of a core is measured again),
 * --open-warmup/BENCH_OPEN_WARMUP s (5: open-loop traffic at the fixed rate before its measured window).
 * Prints tables and ratios; writes the full results to bench-results/ingest-<timestamp>.json.
 *
 * The machine's cores are shared by Redis, the server under test and the load generator; every target is measured
 * the same way, and each run's CPU use per process is reported so that contention is visible.
 */

import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Queue } from 'bullmq';
import {
  cpuSeconds,
  FLOOR_KEY,
  freePort,
  isRunning,
  type LatencySummary,
  machineBusySeconds,
  type PrivateRedis,
  Samples,
  sellsyBody,
  sellsySignature,
  setClockTicks,
  sleep,
  startPrivateRedis,
  stopChild,
  summarize,
  tail,
  track,
  WEBHOOK_PATH,
  waitForHttp200,
} from './lib.ts';
import type { OpenLoopResult } from './open-loop.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TARGETS = ['bare', 'floor', 'listener', 'listener-signed'] as const;
type TargetName = (typeof TARGETS)[number];

// ---------------------------------------------------------------------------------------------------------------
// Options

interface Options {
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
}

function readOptions(): Options {
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
    },
  });
  const env = process.env;
  const num = (name: string, arg: string | undefined, envValue: string | undefined, def: number, min: number) => {
    const raw = arg ?? envValue;
    const value = raw === undefined || raw === '' ? def : Number(raw);
    if (!Number.isFinite(value) || value < min) throw new Error(`${name} must be a number ≥ ${min} (got ${raw})`);
    return value;
  };
  const targets = (values.targets ?? env.BENCH_TARGETS ?? TARGETS.join(','))
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
    // Run order follows TARGETS, whatever order was asked for.
    targets: TARGETS.filter((t) => targets.includes(t)),
    build: !(values['skip-build'] || env.BENCH_SKIP_BUILD === '1'),
    quietWaitS: num('quiet-wait', values['quiet-wait'], env.BENCH_QUIET_WAIT, 120, 0),
    openWarmupS: num('open-warmup', values['open-warmup'], env.BENCH_OPEN_WARMUP, 5, 0),
    retries: Math.round(num('retries', values.retries, env.BENCH_RETRIES, 2, 0)),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Foreign load

/** Below this machine-wide CPU use (% of one core) while we are idle, the machine counts as quiet. */
const QUIET_PCT = 25;

async function busyPct(ms: number): Promise<number> {
  const before = machineBusySeconds();
  await sleep(ms);
  return ((machineBusySeconds() - before) * 100_000) / ms;
}

/**
 * Waits (at most `maxS`) until the machine is quiet while nothing of ours runs: on a shared 2-core machine another
 * job (a test suite, a build) can halve a target's throughput and make the comparison meaningless.
 */
async function waitForQuiet(maxS: number): Promise<{ ok: boolean; busy: number }> {
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

// ---------------------------------------------------------------------------------------------------------------
// Targets

interface Target {
  name: TargetName;
  url: string;
  pid: number | undefined;
  /** Listener: its BullMQ queue. */
  queueName?: string;
  signKey?: string;
  /** Jobs (listener) or list entries (floor) now in Redis; null for bare. */
  countWrites(): Promise<number | null>;
  /** Stops the target; returns a description if it had died on its own before that, else null. */
  stop(): Promise<string | null>;
}

/** A clean environment: nothing from the caller's shell (such as a SELLSY_SIGN_KEY) leaks into a target. */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'LANG'])
    if (process.env[name] !== undefined) env[name] = process.env[name];
  return env;
}

async function startTarget(name: TargetName, redis: PrivateRedis): Promise<Target> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = { ...baseEnv(), PORT: String(port), HOST: '127.0.0.1', REDIS_URL: redis.url };
  let child: ChildProcess;
  let queueName: string | undefined;
  let signKey: string | undefined;
  if (name === 'listener' || name === 'listener-signed') {
    queueName = `bench-${randomBytes(4).toString('hex')}`;
    signKey = name === 'listener-signed' ? randomBytes(16).toString('hex') : undefined;
    // Default LOG_LEVEL (info): one log line per delivery, as in production; stdout (the log) is discarded.
    child = spawn(process.execPath, [join(ROOT, 'dist/src/cli.js'), 'listen'], {
      cwd: ROOT,
      env: { ...env, QUEUE_NAME: queueName, ...(signKey ? { SELLSY_SIGN_KEY: signKey } : {}) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  } else {
    child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'benchmarks/reference-servers.ts'), name], {
      cwd: ROOT,
      env,
      stdio: ['pipe', 'ignore', 'pipe'],
    });
  }
  track(child);
  const stderr = tail(child.stderr);
  await waitForHttp200(`${url}/readyz`, child, 20_000, () => `${name} stderr:\n${stderr()}`);
  return {
    name,
    url,
    pid: child.pid,
    queueName,
    signKey,
    async countWrites() {
      if (name === 'bare') return null;
      if (name === 'floor') return redis.client.llen(FLOOR_KEY);
      const queue = new Queue(queueName as string, { connection: { host: '127.0.0.1', port: redis.port } });
      try {
        const counts = await queue.getJobCounts();
        return Object.values(counts).reduce((a, b) => a + b, 0);
      } finally {
        await queue.close();
      }
    },
    async stop() {
      const died = isRunning(child)
        ? null
        : `${name} died during the run (${child.exitCode ?? child.signalCode}): ${stderr().trim().slice(-1500)}`;
      await stopChild(child, 5000);
      return died;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Measurements

interface Cpu {
  /** % of one core over the measured window. */
  server: number;
  redis: number;
  generator: number;
  /**
   * Everything else the machine did meanwhile (other processes, and kernel time not charged to ours, such as some
   * loopback networking): a few % is normal; tens of % means the run was disturbed by foreign load.
   */
  other: number;
}

/** CPU used by server, Redis and generator, and by the rest of the machine, between construction and `read`. */
class CpuMeter {
  private readonly start: number[];
  private readonly machineStart = machineBusySeconds();
  private readonly t0 = performance.now();
  constructor(
    private readonly pids: { server: number | undefined; redis: number | undefined; generator?: number | undefined },
  ) {
    this.start = [pids.server, pids.redis, pids.generator].map(cpuSeconds);
  }
  read(generatorPct?: number): Cpu {
    const wall = (performance.now() - this.t0) / 1000;
    const [server = NaN, redis = NaN, generator = NaN] = [this.pids.server, this.pids.redis, this.pids.generator].map(
      (pid, i) => ((cpuSeconds(pid) - (this.start[i] as number)) / wall) * 100,
    );
    const gen = generatorPct ?? generator;
    const machine = ((machineBusySeconds() - this.machineStart) / wall) * 100;
    return { server, redis, generator: gen, other: Math.max(0, machine - server - redis - gen) };
  }
}

interface WriteCheck {
  /** 2xx answers counted by the check (minus `"queued":false` answers). */
  acknowledged: number;
  /** Upper bound: requests sent (autocannon: bodies built). */
  sent: number;
  /** Jobs (listener) or list entries (floor) those requests added to Redis; null for bare. */
  writes: number | null;
  ok: boolean | null;
  note: string;
}

interface SaturationResult {
  target: TargetName;
  connections: number;
  durationS: number;
  requests2xx: number;
  rps: number;
  latency: LatencySummary;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  cpu: Cpu;
  writes: WriteCheck;
  /** 1, or more when earlier attempts were disturbed by foreign load and discarded. */
  attempt?: number;
}

interface FixedRateResult extends OpenLoopResult {
  target: TargetName;
  cpu: Cpu;
  writes: WriteCheck;
  attempt?: number;
}

/** One POST per request, each with a new body (relatedid = counter.next++), signed when the target has a key. */
function autocannonRequests(signKey: string | undefined, counter: { next: number }) {
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

/**
 * The warm-up before both measurements: closed-loop autocannon at full speed for `warmupS`, so that every target
 * is JIT-compiled and connected the same way. Closed loop on purpose: it cannot leave a backlog behind (an open-loop
 * warm-up at the fixed rate left a still-cold listener hundreds of ms behind at the start of the measured window).
 */
async function warmUp(target: Target, opts: Options, counter: { next: number }): Promise<{ ok2xx: number }> {
  if (opts.warmupS <= 0) return { ok2xx: 0 };
  const warm = await autocannon({
    url: target.url,
    connections: opts.connections,
    pipelining: 1,
    timeout: 10,
    duration: opts.warmupS,
    requests: autocannonRequests(target.signKey, counter),
  });
  return { ok2xx: warm['2xx'] };
}

async function saturation(
  target: Target,
  redis: PrivateRedis,
  opts: Options,
  idBase: number,
): Promise<SaturationResult> {
  const counter = { next: idBase };
  const warm = await warmUp(target, opts, counter);
  const latencies = new Samples();
  const meter = new CpuMeter({ server: target.pid, redis: redis.pid, generator: process.pid });
  const run = autocannon({
    url: target.url,
    connections: opts.connections,
    pipelining: 1,
    timeout: 10,
    duration: opts.durationS,
    requests: autocannonRequests(target.signKey, counter),
  });
  run.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
    if (status >= 200 && status < 300) latencies.push(ms);
  });
  const result = await run;
  const cpu = meter.read();
  const statusCodes: Record<string, number> = {};
  for (const [code, { count }] of Object.entries(result.statusCodeStats)) statusCodes[code] = Number(count);

  // autocannon stops with up to `connections` requests in flight (warm-up and run); the server still processes
  // them, so Redis may hold that many more writes than 2xx answers, but never fewer, nor more than were sent.
  const acknowledged = warm.ok2xx + result['2xx'];
  const sent = counter.next - idBase;
  const writes = await stableWrites(target);
  const check: WriteCheck =
    writes === null
      ? { acknowledged, sent, writes, ok: null, note: 'bare writes nothing' }
      : {
          acknowledged,
          sent,
          writes,
          ok: writes >= acknowledged && writes <= sent,
          note: `${writes} writes for ${acknowledged} acknowledged (+${writes - acknowledged} in flight when autocannon stopped; ≤ ${sent} sent)`,
        };
  return {
    target: target.name,
    connections: opts.connections,
    durationS: result.duration,
    requests2xx: result['2xx'],
    rps: result['2xx'] / result.duration,
    latency: summarize(latencies.values()),
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    cpu,
    writes: check,
  };
}

async function fixedRate(target: Target, redis: PrivateRedis, opts: Options, idBase: number): Promise<FixedRateResult> {
  const counter = { next: idBase };
  await warmUp(target, opts, counter);
  // Writes from the warm-up are settled and subtracted: the open-loop run must add exactly one per acknowledgement.
  const before = await stableWrites(target);
  // The open-loop generator's own warm-up at the fixed rate (default 5 s). Switching to 128 fresh connections at
  // 2,000 req/s leaves the listener, which runs close to its capacity at that rate on 2 cores, a backlog of a few
  // hundred ms that takes 2–3 s to drain; that transient is not the steady state the window measures. It stays
  // visible in the result's `timeline` (atS < 0), and a backlog still present at the window start is warned about.
  const openWarmupS = opts.openWarmupS;
  const args = [
    '--import',
    'tsx',
    join(ROOT, 'benchmarks/open-loop.ts'),
    '--url',
    target.url,
    '--rate',
    String(opts.rate),
    '--duration',
    String(opts.durationS),
    '--warmup',
    String(openWarmupS),
    '--connections',
    String(opts.openConnections),
    '--id-base',
    String(counter.next),
  ];
  const child = track(
    spawn(process.execPath, args, {
      cwd: ROOT,
      env: { ...baseEnv(), ...(target.signKey ? { BENCH_SIGN_KEY: target.signKey } : {}) },
      stdio: ['pipe', 'pipe', 'pipe'],
    }),
  );
  // CPU is measured from the start of the measured window (the generator says `@window` on stderr) until the
  // generator prints its result, while /proc still knows it.
  const newMeter = () => new CpuMeter({ server: target.pid, redis: redis.pid, generator: child.pid });
  let meter: CpuMeter | null = openWarmupS === 0 ? newMeter() : null;
  let cpu: Cpu | null = null;
  let stdout = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
    if (cpu === null && meter !== null && stdout.includes('\n')) cpu = meter.read();
  });
  const stderr = tail(child.stderr);
  child.stderr?.on('data', (chunk: Buffer) => {
    if (meter === null && chunk.toString('utf8').includes('@window')) meter = newMeter();
  });
  const limitMs = (openWarmupS + opts.durationS + 40) * 1000;
  const killer = setTimeout(() => child.kill('SIGKILL'), limitMs);
  const code = await new Promise<number | null>((resolveExit) => child.once('exit', (c) => resolveExit(c)));
  clearTimeout(killer);
  if (code !== 0) throw new Error(`open-loop generator failed (exit ${code}) against ${target.name}:\n${stderr()}`);
  const result = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as OpenLoopResult;

  const acknowledged = result.all.ok2xx - result.all.notQueued;
  const after = await stableWrites(target);
  const writes = after === null || before === null ? null : after - before;
  const check: WriteCheck =
    writes === null
      ? { acknowledged, sent: result.all.sent, writes, ok: null, note: 'bare writes nothing' }
      : {
          acknowledged,
          sent: result.all.sent,
          writes,
          ok: writes === acknowledged,
          note: `${writes} writes for ${acknowledged} acknowledged`,
        };
  const none: Cpu = { server: NaN, redis: NaN, generator: NaN, other: NaN };
  return { ...result, target: target.name, cpu: cpu ?? none, writes: check };
}

/** Jobs or list entries in Redis once the count stops moving (in-flight requests finish their writes). */
async function stableWrites(target: Target): Promise<number | null> {
  let writes = await target.countWrites();
  for (let i = 0; i < 50 && writes !== null; i++) {
    await sleep(100);
    const again = await target.countWrites();
    if (again === writes) break;
    writes = again;
  }
  return writes;
}

// ---------------------------------------------------------------------------------------------------------------
// Output

const f = (v: number, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : '-');
const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const lpad = (s: string, n: number) => (s.length >= n ? s : ' '.repeat(n - s.length) + s);

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? pad(c, widths[i] ?? 0) : lpad(c, widths[i] ?? 0))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function machine() {
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

async function main(): Promise<void> {
  const opts = readOptions();
  const env = machine();
  if (opts.build) {
    process.stderr.write('bench: npm run build\n');
    const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
    if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}\n${build.stderr}`);
  }
  if (!existsSync(join(ROOT, 'dist/src/cli.js'))) throw new Error('dist/src/cli.js is missing: run npm run build');

  // How busy the machine is before we start: anything but ~0 means other work will share the cores.
  const busyBeforePct = await busyPct(1000);

  const redis = await startPrivateRedis();
  const redisVersion = /redis_version:(\S+)/.exec(await redis.client.info('server'))?.[1] ?? 'unknown';
  const saturationResults: SaturationResult[] = [];
  const fixedRateResults: FixedRateResult[] = [];
  let runIndex = 0;
  const incidents: string[] = [];
  try {
    for (const phase of ['saturation', 'fixed-rate'] as const) {
      for (const name of opts.targets) {
        // A run during which foreign load took more than QUIET_PCT of a core is repeated (up to `retries` times).
        for (let attempt = 1; ; attempt++) {
          runIndex++;
          await redis.reset();
          const quiet = await waitForQuiet(opts.quietWaitS);
          if (!quiet.ok) incidents.push(`${phase} ${name}: started on a busy machine (${f(quiet.busy, 0)}% of a core)`);
          process.stderr.write(`bench: ${phase} ${name} ...`);
          const target = await startTarget(name, redis);
          let other = 0;
          try {
            const idBase = runIndex * 100_000_000; // unique bodies across runs
            if (phase === 'saturation') {
              const r = { ...(await saturation(target, redis, opts, idBase)), attempt };
              saturationResults.push(r);
              other = r.cpu.other;
              process.stderr.write(` ${f(r.rps, 0)} req/s, p99 ${f(r.latency.p99)} ms, other load ${f(other, 0)}%\n`);
            } else {
              const r = { ...(await fixedRate(target, redis, opts, idBase)), attempt };
              fixedRateResults.push(r);
              other = r.cpu.other;
              process.stderr.write(
                ` ${f(r.achievedRate, 0)} req/s, p99 ${f(r.latency.p99)} ms, other load ${f(other, 0)}%\n`,
              );
            }
          } finally {
            const died = await target.stop();
            if (died) {
              incidents.push(`${phase}: ${died}`);
              process.stderr.write(`\nbench: ${died}\n`);
            }
          }
          if (!(other > QUIET_PCT) || attempt > opts.retries) break;
          // Disturbed: drop the result and measure again.
          (phase === 'saturation' ? saturationResults : fixedRateResults).pop();
          process.stderr.write(`bench: disturbed by foreign load, measuring ${name} again\n`);
        }
      }
    }
  } finally {
    await redis.destroy();
  }

  // ---- report
  const out: string[] = [];
  out.push('');
  out.push(
    `Ingest benchmark — node ${env.node}, nproc ${env.nproc}, ${env.cpuModel}, redis ${redisVersion}, ${env.date}`,
  );
  out.push(
    `commit ${env.commit}${env.srcDirty ? ' (src/ has uncommitted changes)' : ''}; Redis: AOF everysec, no RDB, noeviction; one fresh server process and an empty Redis per run`,
  );
  out.push(`machine busy before start: ${f(busyBeforePct, 0)}% of a core (foreign load)`);
  out.push('');
  out.push(
    `Saturation (closed loop): autocannon, ${opts.connections} connections, pipelining 1, ${opts.durationS} s after a ${opts.warmupS} s warm-up; latency of 2xx, ms`,
  );
  out.push(
    table(
      [
        'target',
        'req/s',
        'p50',
        'p99',
        'p99.9',
        'max',
        'non2xx',
        'errors',
        'cpu% srv',
        'redis',
        'gen',
        'other',
        'writes check',
      ],
      saturationResults.map((r) => [
        r.target,
        f(r.rps, 0),
        f(r.latency.p50),
        f(r.latency.p99),
        f(r.latency.p999),
        f(r.latency.max),
        String(r.non2xx),
        String(r.errors + r.timeouts),
        f(r.cpu.server, 0),
        f(r.cpu.redis, 0),
        f(r.cpu.generator, 0),
        f(r.cpu.other, 0),
        r.writes.ok === null ? '-' : `${r.writes.ok ? 'ok' : 'MISMATCH'} ${r.writes.writes}/${r.writes.acknowledged}`,
      ]),
    ),
  );
  out.push('');
  out.push(
    `Fixed rate (open loop): ${opts.rate} req/s for ${opts.durationS} s (after the ${opts.warmupS} s closed-loop warm-up and ${opts.openWarmupS} s at the rate), ` +
      `undici Pool ${opts.openConnections} connections, separate process; latency from intended start, ms (svc = from actual send, lag = send − intended)`,
  );
  out.push(
    table(
      [
        'target',
        'achieved/s',
        'p50',
        'p99',
        'p99.9',
        'max',
        'svc p99',
        'lag p99',
        'non2xx',
        'errors',
        'cpu% srv',
        'redis',
        'gen',
        'other',
        'gen ELU',
        'writes check',
      ],
      fixedRateResults.map((r) => [
        r.target,
        f(r.achievedRate, 0),
        f(r.latency.p50),
        f(r.latency.p99),
        f(r.latency.p999),
        f(r.latency.max),
        f(r.serviceTime.p99),
        f(r.dispatchLag.p99),
        String(r.measured.non2xx),
        String(r.measured.errors + r.measured.unfinished),
        f(r.cpu.server, 0),
        f(r.cpu.redis, 0),
        f(r.cpu.generator, 0),
        f(r.cpu.other, 0),
        f(r.generatorElu),
        r.writes.ok === null ? '-' : `${r.writes.ok ? 'ok' : 'MISMATCH'} ${r.writes.writes}/${r.writes.acknowledged}`,
      ]),
    ),
  );
  out.push(
    'cpu%: % of one core during the measured window; other = the rest of the machine (foreign load, unattributed kernel time).',
  );
  out.push(
    'writes check: jobs (listener) or LPUSHed entries (floor) added to Redis / 2xx answers. Saturation counts the warm-up too and may',
  );
  out.push('exceed by the requests in flight when autocannon stopped; fixed rate must match exactly.');

  const sat = (t: TargetName) => saturationResults.find((r) => r.target === t);
  const fix = (t: TargetName) => fixedRateResults.find((r) => r.target === t);
  const ratios: Record<string, number> = {};
  const verdicts: string[] = [];
  const ratio = (
    label: string,
    key: string,
    a: number | undefined,
    b: number | undefined,
    target?: { min?: number; max?: number },
  ) => {
    if (a === undefined || b === undefined) return;
    const v = a / b;
    ratios[key] = v;
    let verdict = '';
    if (target?.min !== undefined) verdict = `  (target ≥ ${target.min}: ${v >= target.min ? 'met' : 'NOT met'})`;
    if (target?.max !== undefined) verdict = `  (target ≤ ${target.max}: ${v <= target.max ? 'met' : 'NOT met'})`;
    verdicts.push(`  ${pad(label, 58)} ${f(v, 3)}${verdict}`);
  };
  ratio('listener req/s ÷ bare req/s', 'listenerOverBareRps', sat('listener')?.rps, sat('bare')?.rps, { min: 0.45 });
  ratio(
    'listener-signed req/s ÷ bare req/s',
    'listenerSignedOverBareRps',
    sat('listener-signed')?.rps,
    sat('bare')?.rps,
    { min: 0.45 },
  );
  ratio('floor req/s ÷ bare req/s', 'floorOverBareRps', sat('floor')?.rps, sat('bare')?.rps);
  ratio('listener req/s ÷ floor req/s', 'listenerOverFloorRps', sat('listener')?.rps, sat('floor')?.rps);
  ratio(
    `listener p99 ÷ floor p99 at ${opts.rate} req/s`,
    'listenerOverFloorP99',
    fix('listener')?.latency.p99,
    fix('floor')?.latency.p99,
    { max: 1.3 },
  );
  ratio(
    `listener-signed p99 ÷ floor p99 at ${opts.rate} req/s`,
    'listenerSignedOverFloorP99',
    fix('listener-signed')?.latency.p99,
    fix('floor')?.latency.p99,
    { max: 1.3 },
  );
  ratio(
    `  same, service time (from actual send)`,
    'listenerOverFloorServiceP99',
    fix('listener')?.serviceTime.p99,
    fix('floor')?.serviceTime.p99,
  );
  out.push('');
  out.push('Ratios');
  out.push(...verdicts);

  const warnings: string[] = [...incidents];
  for (const r of fixedRateResults) {
    if (r.achievedRate < opts.rate * 0.98)
      warnings.push(`${r.target}: fixed-rate run achieved ${f(r.achievedRate, 0)} req/s, below ${opts.rate}`);
    if (r.generatorElu > 0.8)
      warnings.push(`${r.target}: generator event loop ${f(r.generatorElu * 100, 0)}% busy: it may be the bottleneck`);
    if (r.measured.non2xx + r.measured.errors + r.measured.unfinished > 0) {
      warnings.push(
        `${r.target}: fixed rate non-2xx/errors: ${JSON.stringify({ status: r.measured.statusCodes, errors: r.measured.errorCodes, unfinished: r.measured.unfinished })}`,
      );
    }
    const window = r.timeline.filter((t) => t.atS >= 0);
    const means = window.map((t) => t.meanMs).sort((a, b) => a - b);
    const typical = means[Math.floor(means.length / 2)] ?? 0;
    const first = window[0]?.meanMs ?? 0;
    if (first > 10 && first > 5 * typical) {
      warnings.push(
        `${r.target}: mean latency ${f(first)} ms in the first 0.5 s vs ${f(typical)} ms typical: a backlog carried over from the warm-up`,
      );
    }
    if (r.all.notQueued > 0) warnings.push(`${r.target}: ${r.all.notQueued} answers said "queued":false`);
  }
  for (const r of saturationResults) {
    if (r.non2xx + r.errors + r.timeouts > 0)
      warnings.push(
        `${r.target}: saturation non-2xx/errors: ${JSON.stringify({ status: r.statusCodes, errors: r.errors, timeouts: r.timeouts })}`,
      );
  }
  for (const r of [...saturationResults, ...fixedRateResults]) {
    if (r.cpu.other > 25)
      warnings.push(
        `${r.target}: ${f(r.cpu.other, 0)}% of a core used by other work during the run: figures disturbed`,
      );
    if (r.writes.ok === false) warnings.push(`${r.target}: writes check failed: ${r.writes.note}`);
  }
  const bareFixed = fix('bare');
  if (bareFixed) {
    out.push('');
    out.push(
      `Generator check: against bare it achieved ${f(bareFixed.achievedRate, 0)} of ${opts.rate} req/s, sent ${bareFixed.measured.sent}/${bareFixed.scheduled}, ` +
        `CPU ${f(bareFixed.generatorCpuPct, 0)}% of a core, event loop ${f(bareFixed.generatorElu * 100, 0)}% busy, dispatch lag p50/p99 ${f(bareFixed.dispatchLag.p50)}/${f(bareFixed.dispatchLag.p99)} ms`,
    );
  }
  if (warnings.length > 0) {
    out.push('');
    out.push('Warnings');
    out.push(...warnings.map((w) => `  ${w}`));
  }

  const file = join(ROOT, 'bench-results', `ingest-${env.date.replace(/[:.]/g, '-')}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(
    file,
    `${JSON.stringify({ machine: { ...env, redisVersion, busyBeforePct }, options: opts, saturation: saturationResults, fixedRate: fixedRateResults, ratios, warnings }, null, 2)}\n`,
  );
  out.push('');
  out.push(`Results written to ${file.slice(ROOT.length + 1)}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`\nbench: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
