/**
 * The ingest benchmark's measurements: saturation (closed loop, autocannon in this process: acknowledgements and the
 * writes sustained until the last is in Redis) and fixed rate (open loop, benchmarks/open-loop.ts), each on a fresh
 * target and an empty Redis, in rounds of rotated order; and the check that Redis holds one write per acknowledged
 * delivery.
 */
import autocannon from 'autocannon';
import { autocannonRequests, runOpenLoop } from '../lib/load.ts';
import { CpuMeter, QUIET_PCT, waitForQuiet } from '../lib/machine.ts';
import type { OpenLoopResult } from '../lib/open-loop.ts';
import { baseEnv, sleep } from '../lib/processes.ts';
import type { PrivateRedis } from '../lib/redis.ts';
import { f } from '../lib/report.ts';
import { type LatencySummary, Samples, summarize } from '../lib/stats.ts';
import type { Options, TargetName } from './options.ts';
import { awaitWrites, type Sustained } from './sustained.ts';
import { startTarget } from './targets.ts';

/**
 * % of one core over the measured window, of the server, Redis and the generator; `other`: everything else the machine
 * did meanwhile (a few % is normal; tens of % means the run was disturbed by foreign load).
 */
export type Cpu = Record<'server' | 'redis' | 'generator' | 'other', number>;

export interface WriteCheck {
  /** 2xx answers counted by the check (minus `"queued":false` answers). */
  acknowledged: number;
  /** Upper bound: requests sent (autocannon: bodies built). */
  sent: number;
  /** Jobs (listener) or list entries (floor) those requests added to Redis; null for bare. */
  writes: number | null;
  ok: boolean | null;
  note: string;
}

/** What one run measures: a server on `url`, the writes it made, and the CPU of the processes around it. */
export interface Measured {
  /** Named in error messages. */
  label: string;
  url: string;
  signKey?: string;
  /** Jobs or list entries now in Redis, once the server has written what it acknowledged; null: it writes nothing. */
  countWrites(): Promise<number | null>;
  /** The same count right now, polled after a saturation burst (./sustained.ts); countWrites when not given. */
  countNow?(): Promise<number | null>;
  /** Receipt-to-job lag of the jobs received since `sinceMs` (./move-lag.ts); absent for a server without jobs. */
  moveLag?(sinceMs: number): Promise<LatencySummary>;
  /** Deliveries answered from the listener's spool so far; null for a server without one. */
  spooled(): Promise<number | null>;
  /** CPU of the server, Redis and the generator (`generatorPid`) from now until `read`. */
  meter(generatorPid: number | undefined): { read(): Cpu };
}

/** How hard and how long one run loads the server. */
export type LoadOptions = Pick<
  Options,
  'connections' | 'warmupS' | 'durationS' | 'rate' | 'openWarmupS' | 'openConnections'
>;

export interface SaturationFigures {
  connections: number;
  durationS: number;
  requests2xx: number;
  /** Acknowledgements per second: 2xx answers of the burst ÷ its duration. */
  rps: number;
  /** Writes per second sustained until the last of the burst was in Redis; null for bare. */
  sustained: Sustained | null;
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
export type SaturationResult = SaturationFigures & { target: TargetName };

export interface FixedRateFigures extends OpenLoopResult {
  cpu: Cpu;
  writes: WriteCheck;
  /** The listener's: from each delivery's receipt to its job, over the measured window. */
  moveLag: LatencySummary | null;
}
export type FixedRateResult = FixedRateFigures & { target: TargetName };

/**
 * The warm-up before both measurements: closed-loop autocannon at full speed for `warmupS`, so that every target
 * is JIT-compiled and connected the same way. Closed loop on purpose: it cannot leave a backlog behind (an open-loop
 * warm-up at the fixed rate left a still-cold listener hundreds of ms behind at the start of the measured window).
 */
async function warmUp(target: Measured, opts: LoadOptions, counter: { next: number }): Promise<{ ok2xx: number }> {
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

/**
 * Closed loop: autocannon (in this process) for a burst of `opts.durationS` after a warm-up; its acknowledgements per
 * second, the writes per second sustained until the last one is in Redis (./sustained.ts), and the check that Redis
 * holds every acknowledged write.
 */
export async function saturation(target: Measured, opts: LoadOptions, idBase: number): Promise<SaturationFigures> {
  const counter = { next: idBase };
  const warm = await warmUp(target, opts, counter);
  // The warm-up's writes, settled, so that the burst's own can be timed.
  const before = await stableWrites(target);
  const latencies = new Samples();
  const meter = target.meter(process.pid);
  const startedAt = performance.now();
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
  const sustained =
    before === null
      ? null
      : await awaitWrites(
          { countNow: target.countNow ?? target.countWrites, countWrites: target.countWrites },
          { startedAt, before, acknowledged: result['2xx'] },
        );
  const statusCodes: Record<string, number> = {};
  for (const [code, { count }] of Object.entries(result.statusCodeStats)) statusCodes[code] = Number(count);

  // autocannon stops with up to `connections` requests in flight (warm-up and run); the server still processes
  // them, so Redis may hold that many more writes than 2xx answers, but never fewer, nor more than were sent.
  const acknowledged = warm.ok2xx + result['2xx'];
  const sent = counter.next - idBase;
  const writes = sustained === null || before === null ? null : before + sustained.added;
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
    connections: opts.connections,
    durationS: result.duration,
    requests2xx: result['2xx'],
    rps: result['2xx'] / result.duration,
    sustained,
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

/**
 * Open loop: benchmarks/open-loop.ts at `opts.rate` (after the closed-loop warm-up, unless `opts.warmupS` is 0), and
 * the check that Redis holds exactly one write per acknowledgement.
 */
export async function fixedRate(target: Measured, opts: LoadOptions, idBase: number): Promise<FixedRateFigures> {
  const counter = { next: idBase };
  await warmUp(target, opts, counter);
  // Writes from the warm-up are settled and subtracted: the open-loop run must add exactly one per acknowledgement.
  const before = await stableWrites(target);
  // The open-loop generator's own warm-up at the fixed rate (default 5 s). Switching to 128 fresh connections at
  // 2,000 req/s leaves the listener, which runs close to its capacity at that rate on 2 cores, a backlog of a few
  // hundred ms that takes 2–3 s to drain; that transient is not the steady state the window measures. It stays
  // visible in the result's `timeline` (atS < 0), and a backlog still present at the window start is warned about.
  // CPU is measured from the start of the measured window until the generator prints its result.
  let windowStart = Date.now();
  const { result, cpu } = await runOpenLoop<Cpu>({
    url: target.url,
    rate: opts.rate,
    durationS: opts.durationS,
    warmupS: opts.openWarmupS,
    connections: opts.openConnections,
    idBase: counter.next,
    env: { ...baseEnv(), ...(target.signKey ? { BENCH_SIGN_KEY: target.signKey } : {}) },
    label: target.label,
    meter: (generator) => target.meter(generator),
    onWindow: () => {
      windowStart = Date.now();
    },
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
  const moveLag = target.moveLag ? await target.moveLag(windowStart) : null;
  return { ...result, cpu: cpu ?? none, writes: check, moveLag };
}

/** Jobs or list entries in Redis once the count stops moving (in-flight requests finish their writes). */
async function stableWrites(target: Measured): Promise<number | null> {
  let writes = await target.countWrites();
  for (let i = 0; i < 50 && writes !== null; i++) {
    await sleep(100);
    const again = await target.countWrites();
    if (again === writes) break;
    writes = again;
  }
  return writes;
}

// Rounds

export type Phase = 'saturation' | 'fixed-rate';

/** When a result was measured. */
export interface RunInfo {
  /** 1-based round of its phase. */
  round: number;
  /** 1, or more when earlier attempts were disturbed by foreign load and discarded. */
  attempt: number;
}
export type SaturationRun = SaturationResult & RunInfo;
export type FixedRateRun = FixedRateResult & RunInfo;

export interface Measurements {
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
export async function measureAll(opts: Options, redis: PrivateRedis): Promise<Measurements> {
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
          const measured: Measured = {
            ...target,
            label: name,
            meter: (generator) => new CpuMeter({ server: target.pid, redis: redis.pid, generator }),
          };
          let other = 0;
          try {
            const idBase = runIndex * 100_000_000; // unique bodies across runs
            if (phase === 'saturation') {
              const burst = { ...opts, durationS: opts.burstS };
              const r = { target: name, ...(await saturation(measured, burst, idBase)), round, attempt };
              m.saturation.push(r);
              other = r.cpu.other;
              const jobs = r.sustained ? `, ${f(r.sustained.writesPerS, 0)} jobs/s` : '';
              process.stderr.write(
                ` ${f(r.rps, 0)} acks/s${jobs}, p99 ${f(r.latency.p99)} ms, other load ${f(other, 0)}%\n`,
              );
            } else {
              const r = { target: name, ...(await fixedRate(measured, opts, idBase)), round, attempt };
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
