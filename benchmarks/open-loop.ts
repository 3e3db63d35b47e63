/**
 * Open-loop (fixed-rate) load generator: what latency does a server give at a steady, realistic arrival rate?
 *
 *   node --import tsx benchmarks/open-loop.ts --url http://127.0.0.1:PORT --rate 2000 --duration 10 --warmup 2 \
 *        [--connections 128] [--id-base 0] [--timeout 10] [--mark-from S --mark-to S]
 *        (signing key, if any: env BENCH_SIGN_KEY; --mark-*: also report the requests due in that part of the
 *        measured window, in seconds from its start, e.g. while a fault is injected)
 *
 * Request i is due at t0 + i/rate whatever happened to earlier ones (no coordinated omission: a slow answer does
 * not delay the next request), and its latency is measured from that *intended* start, so time spent waiting for
 * the generator's timer or a free connection counts against the server. The service time (from the moment the
 * request was actually handed to undici) and the dispatch lag (actual − intended) are reported too, so that a
 * generator which cannot keep up is visible instead of silently flattering the figures.
 *
 * Runs in its own process (never in the server's event loop). Sends through an undici Pool (pipelining 1).
 * Bodies are Sellsy-like JSON, unique per request (relatedid = id-base + i). Prints one JSON object on stdout, and
 * `@window` on stderr when the measured window starts.
 * Only requests due after the warm-up are measured; warm-up requests are still counted in `all` (the orchestrator
 * compares those totals with the number of jobs in Redis).
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import {
  type Counts,
  type OpenLoopResult,
  Samples,
  sellsyBody,
  sellsySignature,
  summarize,
  WEBHOOK_PATH,
} from './lib.ts';

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

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      rate: { type: 'string', default: '2000' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      connections: { type: 'string', default: '128' },
      'id-base': { type: 'string', default: '0' },
      timeout: { type: 'string', default: '10' },
      'mark-from': { type: 'string' },
      'mark-to': { type: 'string' },
    },
  });
  if (!values.url) throw new Error('--url is required');
  const rate = Number(values.rate);
  const durationS = Number(values.duration);
  const warmupS = Number(values.warmup);
  const connections = Number(values.connections);
  const idBase = Number(values['id-base']);
  const timeoutMs = Number(values.timeout) * 1000;
  const signKey = process.env.BENCH_SIGN_KEY || undefined;
  // A sub-window [from, to) of the measured window, in seconds from its start (a fault injected meanwhile).
  const markFromMs = values['mark-from'] === undefined ? null : Number(values['mark-from']) * 1000;
  const markToMs = values['mark-to'] === undefined ? null : Number(values['mark-to']) * 1000;
  for (const [name, v] of Object.entries({ rate, durationS, warmupS, connections, idBase, timeoutMs })) {
    if (!Number.isFinite(v) || v < 0) throw new Error(`bad ${name}: ${v}`);
  }

  const pool = new Pool(values.url, {
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
      // Tells the orchestrator to start measuring the other processes' CPU.
      process.stderr.write('@window\n');
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
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  await pool.destroy().catch(() => undefined);
}

// Exit if the orchestrator that started us goes away (it holds our stdin open).
process.stdin.on('end', () => process.exit(1));
process.stdin.on('error', () => process.exit(1));
process.stdin.resume();

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`open-loop: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
