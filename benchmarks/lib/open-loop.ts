/**
 * The open-loop (fixed-rate) generator: request i is due at t0 + i/rate whatever happened to earlier ones (no
 * coordinated omission: a slow answer does not delay the next request), and its latency is measured from that
 * *intended* start, so time spent waiting for the generator's timer or a free connection counts against the server.
 * The service time (from the moment the request was actually handed to undici) and the dispatch lag (actual −
 * intended) are reported too, so that a generator which cannot keep up is visible instead of silently flattering the
 * figures.
 *
 * Sends through an undici Pool (pipelining 1). Bodies are Sellsy-like JSON, unique per request (relatedid = idBase +
 * i). Only requests due after the warm-up are measured; warm-up requests are still counted in `all` (the benchmark
 * compares those totals with the number of jobs in Redis). benchmarks/open-loop.ts runs it in a process of its own.
 */
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';
import { sellsyBody, sellsySignature, WEBHOOK_PATH } from './bodies.ts';
import { type LatencySummary, Samples, summarize } from './stats.ts';

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
  /** With --list-acked: the relatedid of every acknowledged delivery (2xx, not `"queued":false`), warm-up included. */
  acked?: number[];
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

export interface OpenLoopOptions {
  url: string;
  rate: number;
  durationS: number;
  warmupS: number;
  connections: number;
  idBase: number;
  timeoutMs: number;
  signKey: string | undefined;
  /** A sub-window [from, to) of the measured window, in ms from its start (a fault injected meanwhile); or null. */
  markFromMs: number | null;
  markToMs: number | null;
  /** Lists the acknowledged deliveries in the result (`acked`). */
  listAcked: boolean;
  /** Called once, when the measured window starts. */
  onWindow(): void;
  /** Called with the result as soon as it is known, before the connections are closed. */
  onResult(result: OpenLoopResult): void;
}

const newCounts = (): Counts => ({
  sent: 0,
  ok2xx: 0,
  non2xx: 0,
  errors: 0,
  unfinished: 0,
  statusCodes: {},
  errorCodes: {},
  notQueued: 0,
  spooled: 0,
});

function bump(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

/** Sends the load, waits for the answers (at most `timeoutMs` + 5 s after the last request), returns the result. */
export async function openLoop(opts: OpenLoopOptions): Promise<OpenLoopResult> {
  const { rate, durationS, warmupS, connections, idBase, timeoutMs, signKey, markFromMs, markToMs } = opts;
  const pool = new Pool(opts.url, {
    connections,
    pipelining: 1,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    connectTimeout: timeoutMs,
  });

  const interval = 1000 / rate;
  const total = Math.round(rate * (warmupS + durationS));
  const firstMeasured = Math.round(rate * warmupS);
  const scheduled = total - firstMeasured;

  const SLICE_MS = 500;
  const slices = Array.from({ length: Math.ceil(((warmupS + durationS) * 1000) / SLICE_MS) }, (_, k) => ({
    atS: (k * SLICE_MS) / 1000 - warmupS,
    answered: 0,
    meanMs: 0,
    maxMs: 0,
  }));
  const latency = new Samples();
  const markedLatency = new Samples();
  const marked = newCounts();
  const service = new Samples();
  const lag = new Samples();
  const measured = newCounts();
  const all = newCounts();
  const acked: number[] = [];
  let pending = 0;
  let lastMeasuredEnd = 0;
  let cpuAtWindow: NodeJS.CpuUsage | null = null;
  let eluAtWindow: ReturnType<typeof performance.eventLoopUtilization> | null = null;
  let finishedSending = false;
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));

  // Starts a little in the future so the first ticks are not already late.
  const t0 = performance.now() + 50;
  const windowStart = t0 + firstMeasured * interval;

  function fire(i: number, intended: number): void {
    const inWindow = i >= firstMeasured;
    const sinceWindow = intended - windowStart;
    const inMark =
      inWindow && markFromMs !== null && markToMs !== null && sinceWindow >= markFromMs && sinceWindow < markToMs;
    if (inWindow && cpuAtWindow === null) {
      cpuAtWindow = process.cpuUsage();
      eluAtWindow = performance.eventLoopUtilization();
      opts.onWindow();
    }
    const body = sellsyBody(idBase + i);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (signKey) headers['x-webhook-signature'] = sellsySignature(signKey, body);
    const sentAt = performance.now();
    pending++;
    all.sent++;
    if (inWindow) {
      measured.sent++;
      lag.push(sentAt - intended);
    }
    pool
      .request({ method: 'POST', path: WEBHOOK_PATH, headers, body })
      .then(
        async (res) => {
          const text = await res.body.text();
          const end = performance.now();
          const ok = res.statusCode >= 200 && res.statusCode < 300;
          const notQueued = ok && text.includes('"queued":false');
          const spooled = ok && text.includes('"spooled":true');
          for (const c of inWindow ? (inMark ? [all, measured, marked] : [all, measured]) : [all]) {
            bump(c.statusCodes, String(res.statusCode));
            if (ok) c.ok2xx++;
            else c.non2xx++;
            if (notQueued) c.notQueued++;
            if (spooled) c.spooled++;
          }
          if (inMark && ok) markedLatency.push(end - intended);
          if (opts.listAcked && ok && !notQueued) acked.push(idBase + i);
          const slice = ok ? slices[Math.min(slices.length - 1, Math.floor((intended - t0) / SLICE_MS))] : undefined;
          if (slice) {
            slice.answered++;
            slice.meanMs += end - intended; // a sum until the end
            slice.maxMs = Math.max(slice.maxMs, end - intended);
          }
          if (inWindow && ok) {
            latency.push(end - intended);
            service.push(end - sentAt);
            lastMeasuredEnd = Math.max(lastMeasuredEnd, end);
          }
        },
        (err: Error & { code?: string }) => {
          for (const c of inWindow ? (inMark ? [all, measured, marked] : [all, measured]) : [all]) {
            c.errors++;
            bump(c.errorCodes, err.code ?? err.name);
          }
        },
      )
      .finally(() => {
        pending--;
        if (finishedSending && pending === 0) resolveDone();
      });
  }

  // The scheduler: every wake-up sends everything that is due, then sleeps until the next due time. Timers have
  // ~1 ms granularity, so at 2,000 req/s each wake-up sends about two requests; the slack is in `dispatchLag`.
  let next = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (next < total && t0 + next * interval <= now) {
        fire(next, t0 + next * interval);
        next++;
      }
      if (next >= total) return resolve();
      setTimeout(tick, Math.max(0, t0 + next * interval - performance.now()));
    };
    setTimeout(tick, Math.max(0, t0 - performance.now()));
  });
  finishedSending = true;
  if (pending === 0) resolveDone();

  const giveUp = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs + 5000).unref());
  await Promise.race([done, giveUp]);
  const cpu = process.cpuUsage(cpuAtWindow ?? undefined);
  const elu = performance.eventLoopUtilization(eluAtWindow ?? undefined);
  const wallMs = Math.max(1, performance.now() - windowStart);

  // Whatever is still pending now never answered within the timeout.
  measured.unfinished = Math.max(0, measured.sent - measured.ok2xx - measured.non2xx - measured.errors);
  all.unfinished = pending;

  const result: OpenLoopResult = {
    rate,
    durationS,
    warmupS,
    connections,
    scheduled,
    achievedRate: (measured.ok2xx * 1000) / Math.max(1, lastMeasuredEnd - windowStart),
    latency: summarize(latency.values()),
    serviceTime: summarize(service.values()),
    dispatchLag: summarize(lag.values()),
    measured,
    all,
    ...(markFromMs === null ? {} : { marked: { latency: summarize(markedLatency.values()), counts: marked } }),
    generatorCpuPct: ((cpu.user + cpu.system) / 1000 / wallMs) * 100,
    generatorElu: elu.utilization,
    timeline: slices.map((sl) => ({
      atS: sl.atS,
      answered: sl.answered,
      meanMs: Math.round((sl.answered ? sl.meanMs / sl.answered : 0) * 100) / 100,
      maxMs: Math.round(sl.maxMs * 100) / 100,
    })),
    ...(opts.listAcked ? { acked } : {}),
  };
  // Handed over before the connections close: the orchestrator reads the other processes' CPU when it arrives.
  opts.onResult(result);
  await pool.destroy().catch(() => undefined);
  return result;
}
