/**
 * `npm run bench`: how fast does the listener acknowledge Sellsy webhooks, next to what is possible on this machine?
 *
 * Targets, each its own child process on a free 127.0.0.1 port, all against one private redis-server
 * (AOF on, appendfsync everysec, no RDB, noeviction; never 127.0.0.1:6379):
 *   listener         the real service, `node dist/src/cli.js listen`, default settings, no signing key
 *   listener-signed  the same with SELLSY_SIGN_KEY set and correctly signed bodies
 *   bare             minimal Fastify app answering 200 with no I/O: the ceiling
 *   floor            the same app doing one Redis LPUSH before its 200: the cheapest durable acknowledgement
 *   naive            (opt-in) the design the project started from: Fastify with request logging, one BullMQ
 *                    `queue.add` per request (benchmarks/reference-servers.ts naive)
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
 * Rounds. A small shared VM drifts over minutes (bare saturation measured 10,271 req/s in one run and 16,565 req/s
 * half an hour later, while floor stayed ~7,400), so a ratio of two figures measured minutes apart in one sequential
 * pass partly measures the drift. Each phase (all saturation rounds, then all fixed-rate rounds) is therefore run
 * `rounds` times; a round measures every target once, in an order rotated per round (round 1: bare, floor, listener,
 * listener-signed; round 2: floor, listener, listener-signed, bare; ...), so that no target is always first or last
 * and the two figures of a ratio are always measured close together. Every ratio is computed within each round,
 * then reported as the median of the per-round ratios with their min–max; the tables show, per target, the median
 * of each figure across rounds (each column on its own; non-2xx and error counts are totals) and the key figure of
 * every round (req/s, fixed-rate p99). The per-run checks (writes = 2xx, foreign load retries, warnings) apply to
 * every single run.
 *
 * Bodies are Sellsy-like JSON, unique per request (the listener deduplicates on the raw body).
 * Options (argv or env): --duration/BENCH_DURATION s (10), --warmup/BENCH_WARMUP s (2),
 * --connections/BENCH_CONNECTIONS (50), --rate/BENCH_RATE req/s (2000), --open-connections/BENCH_OPEN_CONNECTIONS
 * (128), --targets/BENCH_TARGETS (listener,listener-signed,bare,floor... any subset; add `naive`, the design the
 * project started from, to measure the reference the targets were set against), --skip-build/BENCH_SKIP_BUILD=1,
 * --quiet-wait/BENCH_QUIET_WAIT s (120: before each run, wait that long at most for foreign CPU load to drop),
 * --retries/BENCH_RETRIES (2: a run during which foreign load used > 25% of a core is measured again),
 * --open-warmup/BENCH_OPEN_WARMUP s (5: open-loop traffic at the fixed rate before its measured window),
 * --rounds/BENCH_ROUNDS (3: times each phase is run, see Rounds above),
 * --freeze-rounds/BENCH_FREEZE_ROUNDS (1: rounds of the Redis-freeze fault scenario run last, listener beside the
 * naive design, see benchmarks/redis-freeze.ts; 0 skips it),
 * BENCH_PIPELINE (1: the whole-pipeline benchmark, listener → worker → PostgreSQL, run after the freeze scenario, see
 * benchmarks/pipeline.ts for its BENCH_PIPELINE_* and BENCH_DATABASE_URL options; 0 skips it).
 * Duration: about rounds × targets × (2 × warmup + open-warmup + 2 × duration + ~8 s of start-up and settling), so
 * the default run (3 rounds × 4 targets × 2 phases, 10 s each) takes about 7–8 minutes on a quiet machine, plus
 * any wait for foreign load to drop and any repeated runs; the estimate is printed at the start.
 * Prints tables and ratios and the total wall time; writes every run of every round, the per-round ratios, the
 * per-target medians and the ratio summaries to bench-results/ingest-<timestamp>.json.
 *
 * The machine's cores are shared by Redis, the server under test and the load generator; every target is measured
 * the same way, and each run's CPU use per process is reported so that contention is visible.
 */

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Queue } from 'bullmq';
import {
  baseEnv,
  busyPct,
  CpuMeter,
  FLOOR_KEY,
  f,
  freePort,
  isRunning,
  type LatencySummary,
  machineInfo,
  makeTempDir,
  type OpenLoopResult,
  type PrivateRedis,
  QUIET_PCT,
  ROOT,
  removeTempDir,
  runOpenLoop,
  Samples,
  sellsyBody,
  sellsySignature,
  sleep,
  startPrivateRedis,
  stopChild,
  summarize,
  table,
  tail,
  track,
  WEBHOOK_PATH,
  waitForHttp200,
  waitForQuiet,
} from './lib.ts';
import { pipelineOptionsFromEnv, runPipelineBenchmark } from './pipeline.ts';
import { runFreezeBenchmark } from './redis-freeze.ts';

const TARGETS = ['bare', 'floor', 'listener', 'listener-signed', 'naive'] as const;
/** Measured unless --targets says otherwise. `naive` (the original design, a reference for the targets) is opt-in. */
const DEFAULT_TARGETS = ['bare', 'floor', 'listener', 'listener-signed'];
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
  /** Times each phase is run; every round measures every target once, in a rotated order. */
  rounds: number;
  /** Rounds of the Redis-freeze fault scenario (benchmarks/redis-freeze.ts) at the end; 0 skips it. */
  freezeRounds: number;
  /** The whole-pipeline benchmark (benchmarks/pipeline.ts) at the very end; BENCH_PIPELINE=0 skips it. */
  pipeline: boolean;
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
      rounds: { type: 'string' },
      'freeze-rounds': { type: 'string' },
    },
  });
  const env = process.env;
  const num = (name: string, arg: string | undefined, envValue: string | undefined, def: number, min: number) => {
    const raw = arg ?? envValue;
    const value = raw === undefined || raw === '' ? def : Number(raw);
    if (!Number.isFinite(value) || value < min) throw new Error(`${name} must be a number ≥ ${min} (got ${raw})`);
    return value;
  };
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
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Foreign load

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
  /** Listener: deliveries answered from the local spool since it started (its metrics); null for the others. */
  spooled(): Promise<number | null>;
  /** Stops the target; returns a description if it had died on its own before that, else null. */
  stop(): Promise<string | null>;
}

async function startTarget(name: TargetName, redis: PrivateRedis): Promise<Target> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // Each listener gets its own spool directory (the default ./spool is locked by one process at a time).
  const spoolDir = makeTempDir('sellsy-webhooks-bench-spool-');
  const env = { ...baseEnv(), PORT: String(port), HOST: '127.0.0.1', REDIS_URL: redis.url, SPOOL_DIR: spoolDir };
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
    if (name === 'naive') queueName = `bench-naive-${randomBytes(4).toString('hex')}`;
    child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'benchmarks/reference-servers.ts'), name], {
      cwd: ROOT,
      env: { ...env, ...(queueName ? { QUEUE_NAME: queueName } : {}) },
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
      // Deliveries answered from the spool are jobs only once drained (within a second or so).
      for (let i = 0; i < 100; i++) {
        const ready = (await (await fetch(`${url}/readyz`)).json()) as { spool?: { depth: number } | null };
        if ((ready.spool?.depth ?? 0) === 0) break;
        await sleep(100);
      }
      const queue = new Queue(queueName as string, { connection: { host: '127.0.0.1', port: redis.port } });
      try {
        const counts = await queue.getJobCounts();
        return Object.values(counts).reduce((a, b) => a + b, 0);
      } finally {
        await queue.close();
      }
    },
    async spooled() {
      if (name !== 'listener' && name !== 'listener-signed') return null;
      const metrics = await (await fetch(`${url}/metrics`)).text();
      return Number(/^sellsy_webhooks_deliveries_total\{outcome="spooled"\} (\d+)/m.exec(metrics)?.[1] ?? Number.NaN);
    },
    async stop() {
      const died = isRunning(child)
        ? null
        : `${name} died during the run (${child.exitCode ?? child.signalCode}): ${stderr().trim().slice(-1500)}`;
      await stopChild(child, 5000);
      removeTempDir(spoolDir);
      return died;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Measurements

/**
 * % of one core over the measured window, of the server, Redis and the generator; `other`: everything else the machine
 * did meanwhile (a few % is normal; tens of % means the run was disturbed by foreign load).
 */
type Cpu = Record<'server' | 'redis' | 'generator' | 'other', number>;

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
  /** Listener: deliveries answered from the spool (warm-up included): Redis missed ACK_BUDGET_MS. */
  spooled: number | null;
}

interface FixedRateResult extends OpenLoopResult {
  target: TargetName;
  cpu: Cpu;
  writes: WriteCheck;
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
    spooled: await target.spooled(),
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
  // CPU is measured from the start of the measured window until the generator prints its result.
  const { result, cpu } = await runOpenLoop<Cpu>({
    url: target.url,
    rate: opts.rate,
    durationS: opts.durationS,
    warmupS: opts.openWarmupS,
    connections: opts.openConnections,
    idBase: counter.next,
    env: { ...baseEnv(), ...(target.signKey ? { BENCH_SIGN_KEY: target.signKey } : {}) },
    label: target.name,
    meter: (generator) => new CpuMeter({ server: target.pid, redis: redis.pid, generator }),
  });

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

// ---------------------------------------------------------------------------------------------------------------

// Rounds

type Phase = 'saturation' | 'fixed-rate';

/** When a result was measured. */
interface RunInfo {
  /** 1-based round of its phase. */
  round: number;
  /** 1, or more when earlier attempts were disturbed by foreign load and discarded. */
  attempt: number;
}
type SaturationRun = SaturationResult & RunInfo;
type FixedRateRun = FixedRateResult & RunInfo;

interface Measurements {
  saturation: SaturationRun[];
  fixedRate: FixedRateRun[];
  /** Per phase, the order in which each round measured the targets. */
  orders: Record<Phase, TargetName[][]>;
  incidents: string[];
}

/** Round r measures the targets rotated by r − 1 (bare, floor, … then floor, …, bare), so none is always first. */
function roundOrder(targets: readonly TargetName[], round: number): TargetName[] {
  const k = (round - 1) % targets.length;
  return [...targets.slice(k), ...targets.slice(0, k)];
}

/**
 * Runs every phase `opts.rounds` times; every round measures each target once, on a fresh server process and an
 * empty Redis. A run during which foreign load took more than QUIET_PCT of a core is repeated (up to `retries` times).
 */
async function measureAll(opts: Options, redis: PrivateRedis): Promise<Measurements> {
  const m: Measurements = {
    saturation: [],
    fixedRate: [],
    orders: { saturation: [], 'fixed-rate': [] },
    incidents: [],
  };
  const total = 2 * opts.rounds * opts.targets.length;
  let runIndex = 0;
  let done = 0;
  for (const phase of ['saturation', 'fixed-rate'] as const) {
    for (let round = 1; round <= opts.rounds; round++) {
      const order = roundOrder(opts.targets, round);
      m.orders[phase].push(order);
      for (const name of order) {
        const where = `${phase} round ${round} ${name}`;
        done++;
        for (let attempt = 1; ; attempt++) {
          runIndex++;
          await redis.reset();
          const quiet = await waitForQuiet(opts.quietWaitS);
          if (!quiet.ok) m.incidents.push(`${where}: started on a busy machine (${f(quiet.busy, 0)}% of a core)`);
          process.stderr.write(`bench: [${done}/${total}] ${where} ...`);
          const target = await startTarget(name, redis);
          let other = 0;
          try {
            const idBase = runIndex * 100_000_000; // unique bodies across runs
            if (phase === 'saturation') {
              const r = { ...(await saturation(target, redis, opts, idBase)), round, attempt };
              m.saturation.push(r);
              other = r.cpu.other;
              process.stderr.write(` ${f(r.rps, 0)} req/s, p99 ${f(r.latency.p99)} ms, other load ${f(other, 0)}%\n`);
            } else {
              const r = { ...(await fixedRate(target, redis, opts, idBase)), round, attempt };
              m.fixedRate.push(r);
              other = r.cpu.other;
              process.stderr.write(
                ` ${f(r.achievedRate, 0)} req/s, p99 ${f(r.latency.p99)} ms, other load ${f(other, 0)}%\n`,
              );
            }
          } finally {
            const died = await target.stop();
            if (died) {
              m.incidents.push(`${where}: ${died}`);
              process.stderr.write(`\nbench: ${died}\n`);
            }
          }
          if (!(other > QUIET_PCT) || attempt > opts.retries) break;
          // Disturbed: drop the result and measure again.
          (phase === 'saturation' ? m.saturation : m.fixedRate).pop();
          process.stderr.write(`bench: disturbed by foreign load, measuring ${name} again\n`);
        }
      }
    }
  }
  return m;
}

// ---------------------------------------------------------------------------------------------------------------
// Medians across rounds

/** Median of the finite values (mean of the two middle ones for an even count); NaN if there are none. */
function median(values: number[]): number {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  const mid = v.length >> 1;
  if (v.length === 0) return NaN;
  return v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}

const medianOf = <T>(runs: T[], pick: (r: T) => number) => median(runs.map(pick));
const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

interface LatencyMedians {
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

const latencyMedians = (latencies: LatencySummary[]): LatencyMedians => ({
  p50: median(latencies.map((l) => l.p50)),
  p99: median(latencies.map((l) => l.p99)),
  p999: median(latencies.map((l) => l.p999)),
  max: median(latencies.map((l) => l.max)),
});

const cpuMedians = (cpus: Cpu[]): Cpu => ({
  server: median(cpus.map((c) => c.server)),
  redis: median(cpus.map((c) => c.redis)),
  generator: median(cpus.map((c) => c.generator)),
  other: median(cpus.map((c) => c.other)),
});

/** Rounds whose writes check passed, out of `of`; null for bare (nothing to check). */
interface WritesTally {
  ok: number;
  of: number;
}
function writesTally(checks: WriteCheck[]): WritesTally | null {
  const checked = checks.filter((c) => c.ok !== null);
  return checked.length === 0 ? null : { ok: checked.filter((c) => c.ok).length, of: checked.length };
}

/** One target's saturation figures: medians across rounds, except the counts (totals). */
interface SaturationSummary {
  target: TargetName;
  rounds: number;
  rps: number;
  rpsByRound: number[];
  latency: LatencyMedians;
  cpu: Cpu;
  non2xxTotal: number;
  errorsTotal: number;
  writes: WritesTally | null;
}

interface FixedRateSummary {
  target: TargetName;
  rounds: number;
  achievedRate: number;
  latency: LatencyMedians;
  p99ByRound: number[];
  serviceP99: number;
  dispatchLagP99: number;
  cpu: Cpu;
  generatorElu: number;
  non2xxTotal: number;
  errorsTotal: number;
  writes: WritesTally | null;
}

const byRound = <T extends RunInfo>(runs: T[]) => [...runs].sort((a, b) => a.round - b.round);

function summarizeSaturation(target: TargetName, all: SaturationRun[]): SaturationSummary | null {
  const runs = byRound(all.filter((r) => r.target === target));
  if (runs.length === 0) return null;
  return {
    target,
    rounds: runs.length,
    rps: medianOf(runs, (r) => r.rps),
    rpsByRound: runs.map((r) => r.rps),
    latency: latencyMedians(runs.map((r) => r.latency)),
    cpu: cpuMedians(runs.map((r) => r.cpu)),
    non2xxTotal: sum(runs.map((r) => r.non2xx)),
    errorsTotal: sum(runs.map((r) => r.errors + r.timeouts)),
    writes: writesTally(runs.map((r) => r.writes)),
  };
}

function summarizeFixedRate(target: TargetName, all: FixedRateRun[]): FixedRateSummary | null {
  const runs = byRound(all.filter((r) => r.target === target));
  if (runs.length === 0) return null;
  return {
    target,
    rounds: runs.length,
    achievedRate: medianOf(runs, (r) => r.achievedRate),
    latency: latencyMedians(runs.map((r) => r.latency)),
    p99ByRound: runs.map((r) => r.latency.p99),
    serviceP99: medianOf(runs, (r) => r.serviceTime.p99),
    dispatchLagP99: medianOf(runs, (r) => r.dispatchLag.p99),
    cpu: cpuMedians(runs.map((r) => r.cpu)),
    generatorElu: medianOf(runs, (r) => r.generatorElu),
    non2xxTotal: sum(runs.map((r) => r.measured.non2xx)),
    errorsTotal: sum(runs.map((r) => r.measured.errors + r.measured.unfinished)),
    writes: writesTally(runs.map((r) => r.writes)),
  };
}

interface RatioSummary {
  label: string;
  /** Median of the per-round ratios. */
  median: number;
  min: number;
  max: number;
  /** The ratio of each round (index 0 = round 1); null where a round lacks one of the two measurements. */
  byRound: (number | null)[];
  target?: { min?: number; max?: number };
  met?: boolean;
}

/**
 * Every ratio is computed within a round (both measurements taken minutes apart at most), then summarized across
 * rounds: a ratio of two figures measured at different times would include the machine's drift in between.
 */
function computeRatios(m: Measurements, opts: Options): Record<string, RatioSummary> {
  const sat = (t: TargetName, round: number) => m.saturation.find((r) => r.target === t && r.round === round);
  const fix = (t: TargetName, round: number) => m.fixedRate.find((r) => r.target === t && r.round === round);
  const defs: {
    key: string;
    label: string;
    of: (round: number) => [number | undefined, number | undefined];
    target?: { min?: number; max?: number };
  }[] = [
    {
      key: 'listenerOverBareRps',
      label: 'listener req/s ÷ bare req/s',
      of: (k) => [sat('listener', k)?.rps, sat('bare', k)?.rps],
      target: { min: 0.45 },
    },
    {
      key: 'listenerSignedOverBareRps',
      label: 'listener-signed req/s ÷ bare req/s',
      of: (k) => [sat('listener-signed', k)?.rps, sat('bare', k)?.rps],
      target: { min: 0.45 },
    },
    {
      key: 'naiveOverBareRps',
      label: 'naive (original design) req/s ÷ bare req/s',
      of: (k) => [sat('naive', k)?.rps, sat('bare', k)?.rps],
    },
    {
      key: 'listenerOverNaiveRps',
      label: 'listener req/s ÷ naive req/s',
      of: (k) => [sat('listener', k)?.rps, sat('naive', k)?.rps],
    },
    {
      key: 'naiveOverFloorP99',
      label: `naive p99 ÷ floor p99 at ${opts.rate} req/s`,
      of: (k) => [fix('naive', k)?.latency.p99, fix('floor', k)?.latency.p99],
    },
    {
      key: 'floorOverBareRps',
      label: 'floor req/s ÷ bare req/s',
      of: (k) => [sat('floor', k)?.rps, sat('bare', k)?.rps],
    },
    {
      key: 'listenerOverFloorRps',
      label: 'listener req/s ÷ floor req/s',
      of: (k) => [sat('listener', k)?.rps, sat('floor', k)?.rps],
    },
    {
      key: 'listenerOverFloorP99',
      label: `listener p99 ÷ floor p99 at ${opts.rate} req/s`,
      of: (k) => [fix('listener', k)?.latency.p99, fix('floor', k)?.latency.p99],
      target: { max: 1.3 },
    },
    {
      key: 'listenerSignedOverFloorP99',
      label: `listener-signed p99 ÷ floor p99 at ${opts.rate} req/s`,
      of: (k) => [fix('listener-signed', k)?.latency.p99, fix('floor', k)?.latency.p99],
      target: { max: 1.3 },
    },
    {
      key: 'listenerOverFloorServiceP99',
      label: '  same, service time (from actual send)',
      of: (k) => [fix('listener', k)?.serviceTime.p99, fix('floor', k)?.serviceTime.p99],
    },
  ];
  const ratios: Record<string, RatioSummary> = {};
  for (const def of defs) {
    const perRound: (number | null)[] = [];
    for (let round = 1; round <= opts.rounds; round++) {
      const [a, b] = def.of(round);
      perRound.push(a === undefined || b === undefined ? null : a / b);
    }
    const values = perRound.filter((v): v is number => v !== null && Number.isFinite(v));
    if (values.length === 0) continue;
    const med = median(values);
    let met: boolean | undefined;
    if (def.target?.min !== undefined) met = med >= def.target.min;
    if (def.target?.max !== undefined) met = med <= def.target.max;
    ratios[def.key] = {
      label: def.label,
      median: med,
      min: Math.min(...values),
      max: Math.max(...values),
      byRound: perRound,
      ...(def.target ? { target: def.target, met } : {}),
    };
  }
  return ratios;
}

// ---------------------------------------------------------------------------------------------------------------
// Report

const joinRounds = (values: number[], digits: number) => values.map((v) => f(v, digits)).join(' / ');
const writesCell = (w: WritesTally | null) =>
  w === null ? '-' : w.ok === w.of ? `ok ${w.ok}/${w.of}` : `MISMATCH in ${w.of - w.ok}/${w.of}`;
const minutes = (s: number) => `${Math.floor(s / 60)} min ${String(Math.round(s % 60)).padStart(2, '0')} s`;

/** Warnings about individual runs: each is checked on its own, whatever the medians say. */
function runWarnings(m: Measurements, opts: Options): string[] {
  const warnings: string[] = [...m.incidents];
  const where = (phase: Phase, r: { target: TargetName; round: number }) => `${phase} round ${r.round} ${r.target}`;
  for (const r of m.saturation) {
    if (r.spooled)
      warnings.push(
        `${where('saturation', r)}: ${r.spooled} deliveries went to the spool (Redis slower than ACK_BUDGET_MS)`,
      );
  }
  for (const r of m.fixedRate) {
    const at = where('fixed-rate', r);
    if (r.all.spooled)
      warnings.push(`${at}: ${r.all.spooled} deliveries went to the spool (Redis slower than ACK_BUDGET_MS)`);
    if (r.achievedRate < opts.rate * 0.98)
      warnings.push(`${at}: achieved ${f(r.achievedRate, 0)} req/s, below ${opts.rate}`);
    if (r.generatorElu > 0.8)
      warnings.push(`${at}: generator event loop ${f(r.generatorElu * 100, 0)}% busy: it may be the bottleneck`);
    if (r.measured.non2xx + r.measured.errors + r.measured.unfinished > 0) {
      warnings.push(
        `${at}: non-2xx/errors: ${JSON.stringify({ status: r.measured.statusCodes, errors: r.measured.errorCodes, unfinished: r.measured.unfinished })}`,
      );
    }
    const window = r.timeline.filter((t) => t.atS >= 0);
    const means = window.map((t) => t.meanMs).sort((a, b) => a - b);
    const typical = means[Math.floor(means.length / 2)] ?? 0;
    const first = window[0]?.meanMs ?? 0;
    if (first > 10 && first > 5 * typical) {
      warnings.push(
        `${at}: mean latency ${f(first)} ms in the first 0.5 s vs ${f(typical)} ms typical: a backlog carried over from the warm-up`,
      );
    }
    if (r.all.notQueued > 0) warnings.push(`${at}: ${r.all.notQueued} answers said "queued":false`);
  }
  for (const r of m.saturation) {
    if (r.non2xx + r.errors + r.timeouts > 0)
      warnings.push(
        `${where('saturation', r)}: non-2xx/errors: ${JSON.stringify({ status: r.statusCodes, errors: r.errors, timeouts: r.timeouts })}`,
      );
  }
  const all: [Phase, SaturationRun | FixedRateRun][] = [
    ...m.saturation.map((r): [Phase, SaturationRun] => ['saturation', r]),
    ...m.fixedRate.map((r): [Phase, FixedRateRun] => ['fixed-rate', r]),
  ];
  for (const [phase, r] of all) {
    if (r.cpu.other > QUIET_PCT)
      warnings.push(
        `${where(phase, r)}: ${f(r.cpu.other, 0)}% of a core used by other work during the run: figures disturbed`,
      );
    if (r.attempt > 1) warnings.push(`${where(phase, r)}: measured ${r.attempt} times (earlier runs disturbed)`);
    if (r.writes.ok === false) warnings.push(`${where(phase, r)}: writes check failed: ${r.writes.note}`);
  }
  return warnings;
}

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const startedAt = performance.now();
  const opts = readOptions();
  const env = machineInfo();
  // Read now, so that a bad BENCH_PIPELINE_* value fails before the long run rather than after it.
  const pipelineOpts = opts.pipeline ? pipelineOptionsFromEnv() : null;
  if (opts.build) {
    process.stderr.write('bench: npm run build\n');
    const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
    if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}\n${build.stderr}`);
  }
  if (!existsSync(join(ROOT, 'dist/src/cli.js'))) throw new Error('dist/src/cli.js is missing: run npm run build');

  // How busy the machine is before we start: anything but ~0 means other work will share the cores.
  const busyBeforePct = await busyPct(1000);

  // Rough duration, from the per-run overheads measured on a 2-vCPU VM (server start, Redis reset, settling).
  const perRound = opts.targets.length * (2 * opts.warmupS + opts.openWarmupS + 2 * opts.durationS + 8);
  process.stderr.write(
    `bench: ${opts.rounds} round(s) × ${opts.targets.length} target(s) × 2 phases, about ${minutes(opts.rounds * perRound)} on a quiet machine\n`,
  );

  const redis = await startPrivateRedis();
  const redisVersion = /redis_version:(\S+)/.exec(await redis.client.info('server'))?.[1] ?? 'unknown';
  let m: Measurements;
  try {
    m = await measureAll(opts, redis);
  } finally {
    await redis.destroy();
  }

  const freeze =
    opts.freezeRounds > 0
      ? await runFreezeBenchmark({ rate: 300, beforeS: 3, freezeS: 3, afterS: 3, rounds: opts.freezeRounds })
      : null;
  // Its failure (no PostgreSQL, a check) is reported with the figures above rather than losing them.
  let pipeline: Awaited<ReturnType<typeof runPipelineBenchmark>> | { error: string } | null = null;
  if (pipelineOpts !== null) {
    try {
      pipeline = await runPipelineBenchmark(pipelineOpts);
    } catch (err) {
      pipeline = { error: (err as Error)?.stack ?? String(err) };
    }
  }

  const sat = opts.targets.map((t) => summarizeSaturation(t, m.saturation)).filter((s) => s !== null);
  const fix = opts.targets.map((t) => summarizeFixedRate(t, m.fixedRate)).filter((s) => s !== null);
  const ratios = computeRatios(m, opts);
  const rounds = opts.rounds;

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
  out.push(
    `${rounds} round(s) per phase, each measuring every target once in a rotated order; figures are medians across rounds`,
  );
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
        'req/s by round',
      ],
      sat.map((s) => [
        s.target,
        f(s.rps, 0),
        f(s.latency.p50),
        f(s.latency.p99),
        f(s.latency.p999),
        f(s.latency.max),
        String(s.non2xxTotal),
        String(s.errorsTotal),
        f(s.cpu.server, 0),
        f(s.cpu.redis, 0),
        f(s.cpu.generator, 0),
        f(s.cpu.other, 0),
        writesCell(s.writes),
        joinRounds(s.rpsByRound, 0),
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
        'p99 by round',
      ],
      fix.map((s) => [
        s.target,
        f(s.achievedRate, 0),
        f(s.latency.p50),
        f(s.latency.p99),
        f(s.latency.p999),
        f(s.latency.max),
        f(s.serviceP99),
        f(s.dispatchLagP99),
        String(s.non2xxTotal),
        String(s.errorsTotal),
        f(s.cpu.server, 0),
        f(s.cpu.redis, 0),
        f(s.cpu.generator, 0),
        f(s.cpu.other, 0),
        f(s.generatorElu),
        writesCell(s.writes),
        joinRounds(s.p99ByRound, 1),
      ]),
    ),
  );
  out.push(
    `Each figure is the median of the ${rounds} rounds' figures (each column on its own); non2xx and errors are totals over the rounds.`,
  );
  out.push(
    'cpu%: % of one core during the measured window; other = the rest of the machine (foreign load, unattributed kernel time).',
  );
  out.push(
    'writes check: rounds in which jobs (listener) or LPUSHed entries (floor) added to Redis matched the 2xx answers. Saturation',
  );
  out.push(
    'counts the warm-up too and may exceed by the requests in flight when autocannon stopped; fixed rate must match exactly.',
  );

  out.push('');
  out.push(`Ratios: median of the ${rounds} per-round ratios (each from measurements of the same round), min–max`);
  for (const r of Object.values(ratios)) {
    const range = rounds > 1 ? `  (rounds ${f(r.min, 3)}–${f(r.max, 3)})` : '';
    let verdict = '';
    if (r.target?.min !== undefined) verdict = `  (target ≥ ${r.target.min}: ${r.met ? 'met' : 'NOT met'})`;
    if (r.target?.max !== undefined) verdict = `  (target ≤ ${r.target.max}: ${r.met ? 'met' : 'NOT met'})`;
    out.push(`  ${r.label.padEnd(58)} ${f(r.median, 3)}${range}${verdict}`);
  }

  const bareFixed = byRound(m.fixedRate.filter((r) => r.target === 'bare'));
  if (bareFixed.length > 0) {
    const by = (pick: (r: FixedRateRun) => number, digits: number) => joinRounds(bareFixed.map(pick), digits);
    out.push('');
    out.push(
      `Generator check against bare, by round: achieved ${by((r) => r.achievedRate, 0)} of ${opts.rate} req/s, ` +
        `CPU ${by((r) => r.generatorCpuPct, 0)}% of a core, event loop ${by((r) => r.generatorElu * 100, 0)}% busy, ` +
        `dispatch lag p99 ${by((r) => r.dispatchLag.p99, 2)} ms`,
    );
  }
  if (freeze !== null) {
    out.push('');
    out.push(...freeze.report);
  }
  if (pipeline !== null) {
    out.push('');
    out.push(...('error' in pipeline ? [`Pipeline benchmark FAILED: ${pipeline.error}`] : pipeline.report));
  }
  const warnings = runWarnings(m, opts);
  if (pipeline !== null && ('error' in pipeline || !pipeline.result.ok))
    warnings.push('pipeline: the benchmark failed or an acknowledged delivery was not exactly one row (see above)');
  if (warnings.length > 0) {
    out.push('');
    out.push('Warnings');
    out.push(...warnings.map((w) => `  ${w}`));
  }

  const wallTimeS = (performance.now() - startedAt) / 1000;
  const roundsJson = Array.from({ length: rounds }, (_, i) => ({
    round: i + 1,
    saturationOrder: m.orders.saturation[i] ?? [],
    fixedRateOrder: m.orders['fixed-rate'][i] ?? [],
    ratios: Object.fromEntries(Object.entries(ratios).map(([key, r]) => [key, r.byRound[i] ?? null])),
  }));
  const file = join(ROOT, 'bench-results', `ingest-${env.date.replace(/[:.]/g, '-')}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        machine: { ...env, redisVersion, busyBeforePct },
        options: opts,
        wallTimeS,
        medians: { saturation: sat, fixedRate: fix },
        ratios,
        rounds: roundsJson,
        saturation: m.saturation,
        fixedRate: m.fixedRate,
        redisFreeze: freeze?.runs ?? null,
        pipeline: pipeline === null ? null : 'error' in pipeline ? pipeline : pipeline.result,
        warnings,
      },
      null,
      2,
    )}\n`,
  );
  out.push('');
  out.push(`Total wall time ${minutes(wallTimeS)}${opts.build ? ' (build included)' : ''}`);
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
