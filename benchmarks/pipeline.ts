/**
 * The whole pipeline: how fast do Sellsy deliveries become rows in PostgreSQL, listener → Redis → worker → `postgres`
 * handler, next to storing the same rows straight into PostgreSQL?
 *
 *   npm run bench:pipeline [-- --skip-build]      (also the last phase of `npm run bench`; BENCH_PIPELINE=0 skips it)
 *
 * Processes: a private redis-server (benchmarks/lib.ts: AOF everysec, 127.0.0.1, never the machine's Redis); the
 * listener `node dist/src/cli.js listen` (default settings, spool in a temporary directory, log discarded) and one
 * worker `node dist/src/cli.js work` (`DATABASE_URL`, `DATABASE_SCHEMA`, `WORKER_CONCURRENCY`, `LOG_LEVEL=warn`),
 * each its own process; the load generator runs in this process (phase 1) or in benchmarks/open-loop.ts (phase 2).
 * PostgreSQL is the machine's (`BENCH_DATABASE_URL`, a loopback address only), in a fresh schema `bench_<hex>` that
 * is dropped at the end, on errors and on SIGINT/SIGTERM too.
 *
 * Warm-up: 1,000 deliveries through the whole pipeline (which also proves the worker consumes), then TRUNCATE.
 * Phase 1, throughput: `events` unique deliveries (bodies from lib.ts `sellsyBody`) posted by `connections` concurrent
 *   requests (undici Pool, pipelining 1), then a bounded wait (`waitS`) until every acknowledged delivery is a row;
 *   an error if not. pipeline events/s = rows ÷ (last `stored_at` − first `received_at`). Also: the listener's
 *   acknowledgements/s during that run, the worker's rows/s from its first to its last row, and the worker alone:
 *   rows stored after the last delivery was received ÷ the time it took to store them (the backlog's drain rate).
 * Reference, just after phase 1 (so that the machine's drift stays out of the ratio): the same rows, read back from
 *   phase 1, inserted again by this process into an empty copy of the table (`LIKE … INCLUDING ALL`) with the
 *   handler's statement (every column but `stored_at`), a pool of the worker's size (its most connections at once
 *   during phase 1, from pg_stat_activity) and `WORKER_CONCURRENCY` inserts in flight; events/s by the same formula.
 *   The figure to read is pipeline events/s ÷ direct-insert events/s.
 * Phase 2, latency at a fixed rate: open loop (benchmarks/open-loop.ts, 1 s at the rate, then `seconds`), `rate`
 *   deliveries/s. End to end per row = `stored_at − received_at`, from SQL, for the rows of the measured window;
 *   HTTP acknowledgement latency from each request's intended start for the same requests. Every acknowledged
 *   delivery must be exactly one job and one row: `missing` (acknowledged, no row) and `duplicates` (jobs beyond one
 *   per acknowledged delivery, from the queue's counts: the table's unique key would absorb a second row) must be 0. The deliveries the listener answered from its spool (Redis slower than ACK_BUDGET_MS) are counted.
 * `received_at` is the listener's clock when the request arrived (ms precision); `stored_at` is PostgreSQL's `now()`
 * for the INSERT (statement start, before its commit); both clocks are this machine's.
 *
 * Options (env): BENCH_PIPELINE_EVENTS (20000), BENCH_PIPELINE_CONNECTIONS (50: concurrent requests in phase 1),
 * BENCH_PIPELINE_RATE (500 deliveries/s), BENCH_PIPELINE_SECONDS (10), BENCH_WORKER_CONCURRENCY (50),
 * BENCH_PIPELINE_WAIT (120 s: at most, for the rows of a phase), BENCH_QUIET_WAIT (120 s: at most, before starting,
 * for foreign CPU load to drop below 25% of a core), BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/test),
 * BENCH_SKIP_BUILD=1 or --skip-build (dist/ is built anyway if missing), BENCH_PIPELINE_MODE (`split`: the listener and
 * the worker as two processes, `listen` and `work`, as the README advises for production; `start`: both in one
 * process, `sellsy-webhooks start`, what `npm start` runs — its CPU is then reported as the listener's).
 * A default run takes about a minute (plus the build and any wait for a quiet machine). Prints tables and each
 * phase's CPU use per process (PostgreSQL's included; `other` shows foreign load); writes
 * bench-results/pipeline-<timestamp>.json; exits 1 when a check fails.
 */

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import pg from 'pg';
import { Pool } from 'undici';
import {
  baseEnv,
  CpuMeter,
  cpuSeconds,
  f,
  freePort,
  isRunning,
  machineInfo,
  makeTempDir,
  QUIET_PCT,
  ROOT,
  removeTempDir,
  runOpenLoop,
  sellsyBody,
  sleep,
  startPrivateRedis,
  stopChild,
  table,
  tail,
  track,
  WEBHOOK_PATH,
  waitForHttp200,
  waitForQuiet,
} from './lib.ts';

/** The worker's connections to PostgreSQL carry this application_name (PGAPPNAME), so its pool size can be seen. */
const workerAppName = (schema: string) => `${schema}-worker`;
const WARMUP_EVENTS = 1000;
/** Seconds of open-loop traffic at the fixed rate before phase 2's measured window (new connections, JIT). */
const OPEN_WARMUP_S = 1;

// ---------------------------------------------------------------------------------------------------------------
// Options

export interface PipelineOptions {
  events: number;
  connections: number;
  rate: number;
  seconds: number;
  workerConcurrency: number;
  waitS: number;
  /** Seconds to wait at most, before starting, for foreign load to drop below QUIET_PCT. */
  quietWaitS: number;
  databaseUrl: string;
  /** `split`: `listen` and `work`, two processes; `start`: one process running both. */
  mode: 'split' | 'start';
}

export function pipelineOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): PipelineOptions {
  const num = (name: string, def: number, min: number) => {
    const raw = env[name];
    const value = raw === undefined || raw === '' ? def : Number(raw);
    if (!Number.isFinite(value) || value < min) throw new Error(`${name} must be a number ≥ ${min} (got ${raw})`);
    return value;
  };
  const databaseUrl = env.BENCH_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
  let host: string;
  try {
    host = new URL(databaseUrl).hostname;
  } catch {
    throw new Error('BENCH_DATABASE_URL is not a URL');
  }
  // The benchmark creates and drops a schema and loads the server: never anywhere but this machine.
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(host))
    throw new Error(`BENCH_DATABASE_URL must point to 127.0.0.1 (got host "${host}")`);
  const mode = env.BENCH_PIPELINE_MODE || 'split';
  if (mode !== 'split' && mode !== 'start') throw new Error(`BENCH_PIPELINE_MODE must be split or start (got ${mode})`);
  return {
    mode,
    events: Math.round(num('BENCH_PIPELINE_EVENTS', 20_000, 1)),
    connections: Math.round(num('BENCH_PIPELINE_CONNECTIONS', 50, 1)),
    rate: num('BENCH_PIPELINE_RATE', 500, 1),
    seconds: num('BENCH_PIPELINE_SECONDS', 10, 1),
    workerConcurrency: Math.round(num('BENCH_WORKER_CONCURRENCY', 50, 1)),
    waitS: num('BENCH_PIPELINE_WAIT', 120, 1),
    quietWaitS: num('BENCH_QUIET_WAIT', 120, 0),
    databaseUrl,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Results

/** The processes whose CPU time is measured; `generator` is whoever sends the load (or inserts, for the reference). */
type Pids = Record<'listener' | 'worker' | 'redis' | 'generator', number | undefined>;

/**
 * % of one core over a window: per process; `postgres`, every process of the machine named `postgres` (its backends
 * and background writers: not only ours when something else uses that server); `other`, the rest of the machine
 * (foreign load, kernel time not charged to a process).
 */
export type CpuUse = Record<'listener' | 'worker' | 'redis' | 'generator' | 'postgres' | 'other', number>;

export interface Integrity {
  acknowledged: number;
  rows: number;
  /** Acknowledged deliveries without a row. */
  missing: number;
  /** Jobs the listener created during the phase (from the queue's counts). */
  jobs: number;
  /** Jobs beyond one per acknowledged delivery. (Rows cannot repeat: the table's unique key absorbs a second
   * insert of a delivery, so a duplicate shows in the queue, not in the table.) */
  duplicates: number;
  non2xx: number;
  errors: number;
  /** Deliveries the listener answered from its local spool (Redis missed ACK_BUDGET_MS), queued later. */
  spooled: number;
  ok: boolean;
}

export interface ThroughputResult {
  events: number;
  connections: number;
  /** Rows ÷ (last stored_at − first received_at). */
  pipelineRate: number;
  pipelineSeconds: number;
  /** 2xx answers ÷ wall time of the posting. */
  listenerRate: number;
  listenerSeconds: number;
  /** Rows ÷ (last stored_at − first stored_at). */
  workerRate: number;
  /** Most connections the worker held to PostgreSQL at once (its pool size, seen from pg_stat_activity). */
  workerPoolSize: number;
  /** Rows stored after the last delivery was received, and their rate (the worker alone, draining the backlog). */
  drainRows: number;
  drainRate: number;
  cpu: CpuUse;
  integrity: Integrity;
}

export interface DirectInsertResult {
  events: number;
  poolSize: number;
  concurrency: number;
  rate: number;
  seconds: number;
  cpu: CpuUse;
}

export interface LatencyResult {
  rate: number;
  seconds: number;
  achievedRate: number;
  /** Rows of the measured window. */
  measuredRows: number;
  /** End to end (stored_at − received_at), ms. */
  e2e: { p50: number; p90: number; p99: number; max: number };
  /** HTTP acknowledgement from the intended start, ms (the same requests). */
  ack: { p50: number; p99: number; max: number };
  cpu: CpuUse;
  integrity: Integrity;
}

export interface PipelineResult {
  options: PipelineOptions;
  schema: string;
  postgresVersion: string;
  synchronousCommit: string;
  redisVersion: string;
  busyBeforePct: number;
  throughput: ThroughputResult;
  direct: DirectInsertResult;
  /** pipeline events/s ÷ direct-insert events/s. */
  ratio: number;
  latency: LatencyResult;
  ok: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// CPU

/** CPU seconds so far of every process named `postgres`, by pid (Linux /proc; empty elsewhere). */
function postgresCpu(): Map<number, number> {
  const byPid = new Map<number, number>();
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    return byPid;
  }
  for (const entry of entries) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) === 'postgres')
        byPid.set(Number(entry), cpuSeconds(Number(entry)));
    } catch {
      // gone meanwhile
    }
  }
  return byPid;
}

/** CPU of the processes of a phase, PostgreSQL's backends included. */
const newMeter = (pids: Pids) => new CpuMeter(pids, { postgres: postgresCpu });

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL

/** DROP SCHEMA from a synchronous child: what the `exit` hook can still do after a SIGINT. */
const DROP_SCRIPT = `
import pg from 'pg';
const client = new pg.Client({ connectionString: process.env.BENCH_DB, connectionTimeoutMillis: 5000 });
await client.connect();
await client.query("SET lock_timeout = '10s'");
await client.query('DROP SCHEMA IF EXISTS ' + pg.escapeIdentifier(process.env.BENCH_SCHEMA) + ' CASCADE');
await client.end();
`;

interface Db {
  pool: pg.Pool;
  schema: string;
  /** `<schema>.sellsy_events`, quoted. */
  events: string;
  query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  drop(): Promise<void>;
}

async function openDb(url: string): Promise<Db> {
  const schema = `bench_${randomBytes(6).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 5000 });
  pool.on('error', () => undefined);
  try {
    await pool.query('SELECT 1');
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new Error(
      `the pipeline benchmark needs a PostgreSQL it may create a schema in, and none answered at BENCH_DATABASE_URL ` +
        `(${(err as Error).message})`,
      { cause: err },
    );
  }
  const quoted = pg.escapeIdentifier(schema);
  let dropped = false;
  // SIGINT/SIGTERM (lib.ts exits the process) or an uncaught error: children are killed by lib's hook, the schema
  // is dropped here, synchronously.
  const onExit = () => {
    if (dropped) return;
    dropped = true;
    spawnSync(process.execPath, ['--input-type=module', '-e', DROP_SCRIPT], {
      cwd: ROOT,
      env: { ...baseEnv(), BENCH_DB: url, BENCH_SCHEMA: schema },
      stdio: 'ignore',
      timeout: 20_000,
    });
  };
  process.on('exit', onExit);
  await pool.query(`CREATE SCHEMA ${quoted}`);
  return {
    pool,
    schema,
    events: `${quoted}.sellsy_events`,
    async query<R extends pg.QueryResultRow>(sql: string, params?: unknown[]) {
      return (await pool.query<R>(sql, params)).rows;
    },
    async drop() {
      if (dropped) return;
      try {
        await pool.query("SET lock_timeout = '10s'");
        await pool.query(`DROP SCHEMA IF EXISTS ${quoted} CASCADE`);
        dropped = true;
        process.off('exit', onExit);
      } finally {
        await pool.end().catch(() => undefined);
      }
    },
  };
}

const count = async (db: Db, tableName: string): Promise<number> =>
  (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${tableName}`))[0]?.n ?? 0;

/**
 * Waits until `tableName` holds at least `expected` rows and the count has stopped moving for 500 ms; an error
 * after `waitS` seconds or when the worker dies.
 */
async function waitForRows(
  db: Db,
  tableName: string,
  expected: number,
  waitS: number,
  worker: Service,
  what: string,
): Promise<number> {
  const deadline = Date.now() + waitS * 1000;
  let rows = -1;
  let stableSince = Date.now();
  for (;;) {
    const now = await count(db, tableName);
    if (now !== rows) stableSince = Date.now();
    rows = now;
    if (rows >= expected && Date.now() - stableSince >= 500) return rows;
    if (!isRunning(worker.child))
      throw new Error(`the worker died while ${what} (${rows} of ${expected} rows)\n${worker.output()}`);
    if (Date.now() > deadline)
      throw new Error(
        `${what}: only ${rows} of ${expected} acknowledged deliveries were rows after ${waitS} s (BENCH_PIPELINE_WAIT)\n` +
          `worker output:\n${worker.output()}`,
      );
    await sleep(100);
  }
}

/** Rows vs acknowledged deliveries, for the bodies with relatedid in [from, to). */
async function integrity(
  db: Db,
  range: { from: number; to: number },
  answers: { acknowledged: number; jobs: number; non2xx: number; errors: number; spooled: number },
): Promise<Integrity> {
  const [r] = await db.query<{ rows: number; distinct: number; inside: number }>(
    `SELECT count(*)::int AS rows, count(DISTINCT related_id)::int AS distinct,
            count(DISTINCT related_id) FILTER (WHERE related_id::bigint >= $1 AND related_id::bigint < $2)::int AS inside
       FROM ${db.events}`,
    [range.from, range.to],
  );
  const rows = r?.rows ?? 0;
  const missing = Math.max(0, answers.acknowledged - (r?.inside ?? 0));
  const duplicates = Math.max(0, answers.jobs - answers.acknowledged);
  return {
    ...answers,
    rows,
    missing,
    duplicates,
    ok:
      missing === 0 &&
      answers.jobs === answers.acknowledged &&
      rows === answers.acknowledged &&
      answers.non2xx + answers.errors === 0,
  };
}

/** The listener's count of deliveries answered from its spool so far (its /metrics). */
async function spooledSoFar(listenerUrl: string): Promise<number> {
  const metrics = await (await fetch(`${listenerUrl}/metrics`)).text();
  return Number(/^sellsy_webhooks_deliveries_total\{outcome="spooled"\} (\d+)/m.exec(metrics)?.[1] ?? Number.NaN);
}

// ---------------------------------------------------------------------------------------------------------------
// The service's processes

interface Service {
  child: ChildProcess;
  output(): string;
}

function startService(command: 'listen' | 'work' | 'start', env: NodeJS.ProcessEnv): Service {
  // The listener logs one line per delivery at info (as in production): its stdout is discarded. The worker runs
  // at warn, so its few lines are kept for error messages. `start` logs both at info, discarded.
  const child = track(
    spawn(process.execPath, [join(ROOT, 'dist/src/cli.js'), command], {
      cwd: ROOT,
      env,
      stdio: ['ignore', command === 'work' ? 'pipe' : 'ignore', 'pipe'],
    }),
  );
  const out = tail(child.stdout);
  const err = tail(child.stderr);
  return { child, output: () => `${out()}${err()}`.trim() };
}

async function waitForTable(db: Db, worker: Service, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [r] = await db.query<{ oid: string | null }>('SELECT to_regclass($1)::text AS oid', [db.events]);
    if (r?.oid) return;
    if (!isRunning(worker.child))
      throw new Error(`the worker exited (${worker.child.exitCode ?? worker.child.signalCode})\n${worker.output()}`);
    if (Date.now() > deadline) throw new Error(`the worker did not create ${db.events} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Load

interface PostResult {
  ok2xx: number;
  non2xx: number;
  errors: number;
  seconds: number;
}

/** POSTs bodies with relatedid `from` … `from + n − 1`, `connections` at a time; an error past `limitS`. */
async function post(url: string, from: number, n: number, connections: number, limitS: number): Promise<PostResult> {
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

// ---------------------------------------------------------------------------------------------------------------
// Phases

interface Span {
  rows: number;
  firstReceived: number;
  lastReceived: number;
  firstStored: number;
  lastStored: number;
  /** Rows stored after the last row was received. */
  afterLastReceived: number;
}

/** Times in seconds since the epoch, from PostgreSQL. */
async function span(db: Db, tableName: string): Promise<Span> {
  const [r] = await db.query<Record<keyof Span, number>>(
    `WITH t AS (SELECT received_at, stored_at FROM ${tableName}),
          m AS (SELECT max(received_at) AS last_received FROM t)
     SELECT count(*)::int AS "rows",
            extract(epoch FROM min(received_at))::float8 AS "firstReceived",
            extract(epoch FROM max(received_at))::float8 AS "lastReceived",
            extract(epoch FROM min(stored_at))::float8 AS "firstStored",
            extract(epoch FROM max(stored_at))::float8 AS "lastStored",
            count(*) FILTER (WHERE stored_at > (SELECT last_received FROM m))::int AS "afterLastReceived"
       FROM t`,
  );
  if (!r) throw new Error(`no rows in ${tableName}`);
  return r;
}

async function throughputPhase(
  ctx: Context,
  from: number,
): Promise<{ result: ThroughputResult; range: { from: number; to: number } }> {
  const { db, opts, listenerUrl, worker } = ctx;
  const spooledBefore = await spooledSoFar(listenerUrl);
  const jobsBefore = await ctx.jobsSoFar();
  // The worker's pool size, as PostgreSQL sees it: its most connections at once while it works flat out.
  let workerPoolSize = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const [r] = await db.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [workerAppName(db.schema)],
      );
      workerPoolSize = Math.max(workerPoolSize, r?.n ?? 0);
      await sleep(100);
    }
  })();
  const meter = newMeter(ctx.pids);
  let posted: PostResult;
  let cpu: CpuUse;
  try {
    posted = await post(listenerUrl, from, opts.events, opts.connections, opts.waitS);
    await waitForRows(db, db.events, posted.ok2xx, opts.waitS, worker, 'phase 1 (throughput)');
    cpu = meter.read();
  } finally {
    sampling = false;
    await sampler;
  }
  const s = await span(db, db.events);
  const pipelineSeconds = s.lastStored - s.firstReceived;
  const drainSeconds = s.lastStored - s.lastReceived;
  const range = { from, to: from + opts.events };
  return {
    range,
    result: {
      events: opts.events,
      connections: opts.connections,
      pipelineRate: s.rows / pipelineSeconds,
      pipelineSeconds,
      listenerRate: posted.ok2xx / posted.seconds,
      listenerSeconds: posted.seconds,
      workerRate: s.rows / (s.lastStored - s.firstStored),
      workerPoolSize,
      drainRows: s.afterLastReceived,
      drainRate: drainSeconds > 0 ? s.afterLastReceived / drainSeconds : Number.NaN,
      cpu,
      integrity: await integrity(db, range, {
        acknowledged: posted.ok2xx,
        jobs: (await ctx.jobsSoFar()) - jobsBefore,
        non2xx: posted.non2xx,
        errors: posted.errors,
        spooled: (await spooledSoFar(listenerUrl)) - spooledBefore,
      }),
    },
  };
}

/**
 * The reference: phase 1's rows inserted again by this process, one INSERT each (the handler's statement), through
 * a pool of the handler's size with WORKER_CONCURRENCY inserts in flight, into an empty copy of the table.
 */
async function directInsertPhase(ctx: Context, poolSize: number): Promise<DirectInsertResult> {
  const { db, opts } = ctx;
  const direct = `${pg.escapeIdentifier(db.schema)}.direct_events`;
  await db.query(`CREATE TABLE ${direct} (LIKE ${db.events} INCLUDING ALL)`);
  // Every column the handler writes: all but stored_at (its default, now(), is the measurement). Read and written
  // as text, so that each value goes back unchanged whatever its type.
  const columns = (
    await db.query<{ name: string }>(
      `SELECT column_name AS name FROM information_schema.columns
        WHERE table_schema = $1 AND table_name = 'sellsy_events' AND column_name <> 'stored_at'
        ORDER BY ordinal_position`,
      [db.schema],
    )
  ).map((c) => pg.escapeIdentifier(c.name));
  const receivedAt = columns.indexOf('"received_at"');
  const rows = (
    await db.pool.query<unknown[]>({
      text: `SELECT ${columns.map((c) => `${c}::text`).join(', ')} FROM ${db.events} ORDER BY received_at`,
      rowMode: 'array',
    })
  ).rows;
  const insert =
    `INSERT INTO ${direct} (${columns.join(', ')}) ` +
    `VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')}) ON CONFLICT DO NOTHING`;
  const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: poolSize, connectionTimeoutMillis: 5000 });
  pool.on('error', () => undefined);
  const insertAll = async (list: unknown[][]) => {
    let next = 0;
    const loop = async () => {
      while (next < list.length) {
        const values = [...(list[next++] as unknown[])];
        values[receivedAt] = new Date();
        await pool.query(insert, values);
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.workerConcurrency, list.length) }, loop));
  };
  try {
    // Warm-up: connections opened, statement planned, JIT; then the table is emptied again.
    await insertAll(rows.slice(0, WARMUP_EVENTS));
    await db.query(`TRUNCATE ${direct}`);
    const meter = newMeter(ctx.pids);
    await insertAll(rows);
    const cpu = meter.read();
    const s = await span(db, direct);
    if (s.rows !== rows.length) throw new Error(`direct insert: ${s.rows} rows for ${rows.length} inserts`);
    const seconds = s.lastStored - s.firstReceived;
    return { events: s.rows, poolSize, concurrency: opts.workerConcurrency, rate: s.rows / seconds, seconds, cpu };
  } finally {
    await pool.end().catch(() => undefined);
    await db.query(`DROP TABLE IF EXISTS ${direct}`).catch(() => undefined);
  }
}

async function latencyPhase(ctx: Context, from: number): Promise<LatencyResult> {
  const { db, opts, listenerUrl, worker } = ctx;
  const spooledBefore = await spooledSoFar(listenerUrl);
  const jobsBefore = await ctx.jobsSoFar();
  // Phase 2's generator: CPU over its measured window.
  const { result, cpu } = await runOpenLoop<CpuUse>({
    url: listenerUrl,
    rate: opts.rate,
    durationS: opts.seconds,
    warmupS: OPEN_WARMUP_S,
    idBase: from,
    meter: (generator) => newMeter({ ...ctx.pids, generator }),
  });
  const acknowledged = result.all.ok2xx - result.all.notQueued;
  await waitForRows(db, db.events, acknowledged, opts.waitS, worker, 'phase 2 (fixed rate)');
  const firstMeasured = from + Math.round(opts.rate * OPEN_WARMUP_S);
  const [e] = await db.query<{ n: number; p50: number; p90: number; p99: number; max: number }>(
    `WITH d AS (
       SELECT extract(epoch FROM stored_at - received_at)::float8 * 1000 AS ms
         FROM ${db.events} WHERE related_id::bigint >= $1)
     SELECT count(*)::int AS n,
            percentile_disc(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
            percentile_disc(0.9) WITHIN GROUP (ORDER BY ms) AS p90,
            percentile_disc(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
            max(ms) AS max
       FROM d`,
    [firstMeasured],
  );
  return {
    rate: opts.rate,
    seconds: opts.seconds,
    achievedRate: result.achievedRate,
    measuredRows: e?.n ?? 0,
    e2e: { p50: e?.p50 ?? NaN, p90: e?.p90 ?? NaN, p99: e?.p99 ?? NaN, max: e?.max ?? NaN },
    ack: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
    cpu: cpu ?? { listener: NaN, worker: NaN, redis: NaN, generator: NaN, postgres: NaN, other: NaN },
    integrity: await integrity(
      db,
      { from, to: from + result.all.sent },
      {
        acknowledged,
        jobs: (await ctx.jobsSoFar()) - jobsBefore,
        non2xx: result.all.non2xx + result.all.notQueued,
        errors: result.all.errors + result.all.unfinished,
        spooled: (await spooledSoFar(listenerUrl)) - spooledBefore,
      },
    ),
  };
}

// ---------------------------------------------------------------------------------------------------------------

interface Context {
  opts: PipelineOptions;
  db: Db;
  listenerUrl: string;
  worker: Service;
  pids: Pids;
  /** Jobs in the ingest queue, every state: what the listener has created so far. */
  jobsSoFar(): Promise<number>;
}

/** Runs the warm-up, phase 1, the reference and phase 2; stops everything it started on every path. */
export async function runPipelineBenchmark(
  opts: PipelineOptions,
): Promise<{ result: PipelineResult; report: string[] }> {
  if (!existsSync(join(ROOT, 'dist/src/cli.js'))) throw new Error('dist/src/cli.js is missing: run npm run build');
  const busyBeforePct = (await waitForQuiet(opts.quietWaitS)).busy;
  // Redis first: lib.ts's exit hook (SIGKILL to every child) is then installed before openDb's (DROP SCHEMA), and runs
  // first, so the schema is dropped after the worker is gone.
  const redis = await startPrivateRedis();
  let db: Db;
  try {
    db = await openDb(opts.databaseUrl);
  } catch (err) {
    await redis.destroy();
    throw err;
  }
  let listener: Service | undefined;
  let worker: Service | undefined;
  let queue: Queue | undefined;
  const spoolDir = makeTempDir('sellsy-webhooks-bench-spool-');
  try {
    const [version] = await db.query<{ v: string; sc: string }>(
      "SELECT current_setting('server_version') AS v, current_setting('synchronous_commit') AS sc",
    );
    const redisVersion = /redis_version:(\S+)/.exec(await redis.client.info('server'))?.[1] ?? 'unknown';
    const queueName = `bench-pipeline-${randomBytes(4).toString('hex')}`;
    const common = { ...baseEnv(), REDIS_URL: redis.url, QUEUE_NAME: queueName };
    const jobQueue = new Queue(queueName, { connection: { url: redis.url } });
    queue = jobQueue;

    const workerEnv = {
      DATABASE_URL: opts.databaseUrl,
      DATABASE_SCHEMA: db.schema,
      WORKER_CONCURRENCY: String(opts.workerConcurrency),
      PGAPPNAME: workerAppName(db.schema),
    };
    const port = await freePort();
    const listenerUrl = `http://127.0.0.1:${port}`;
    const listenerEnv = { PORT: String(port), HOST: '127.0.0.1', SPOOL_DIR: spoolDir };
    if (opts.mode === 'start') {
      process.stderr.write(
        `bench: pipeline, schema ${db.schema}: starting the service (listener and worker, one process)\n`,
      );
      worker = listener = startService('start', { ...common, ...workerEnv, ...listenerEnv });
      await waitForTable(db, worker, 20_000);
    } else {
      process.stderr.write(`bench: pipeline, schema ${db.schema}: starting the worker and the listener\n`);
      worker = startService('work', { ...common, ...workerEnv, LOG_LEVEL: 'warn' });
      await waitForTable(db, worker, 20_000);
      listener = startService('listen', { ...common, ...listenerEnv });
    }
    const started = listener;
    await waitForHttp200(`${listenerUrl}/readyz`, started.child, 20_000, () => `listener:\n${started.output()}`);
    const ctx: Context = {
      opts,
      db,
      listenerUrl,
      worker,
      pids: {
        listener: listener.child.pid,
        // With `start`, one process: its CPU is counted once, as the listener's.
        worker: worker === listener ? undefined : worker.child.pid,
        redis: redis.pid,
        generator: process.pid,
      },
      async jobsSoFar() {
        const counts = await jobQueue.getJobCounts();
        return Object.values(counts).reduce((a, b) => a + b, 0);
      },
    };

    process.stderr.write(`bench: pipeline warm-up, ${WARMUP_EVENTS} deliveries\n`);
    let nextId = 1;
    const warm = await post(listenerUrl, nextId, WARMUP_EVENTS, opts.connections, opts.waitS);
    nextId += WARMUP_EVENTS;
    await waitForRows(db, db.events, warm.ok2xx, opts.waitS, worker, 'the warm-up');
    await db.query(`TRUNCATE ${db.events}`);

    process.stderr.write(`bench: pipeline phase 1, ${opts.events} deliveries, ${opts.connections} at a time\n`);
    const throughput = await throughputPhase(ctx, nextId);
    nextId = throughput.range.to;

    process.stderr.write('bench: pipeline reference, the same rows inserted directly\n');
    const { workerPoolSize } = throughput.result;
    if (workerPoolSize < 1) throw new Error(`no connection of the worker (${workerAppName(db.schema)}) was seen`);
    const direct = await directInsertPhase(ctx, workerPoolSize);
    await db.query(`TRUNCATE ${db.events}`);

    process.stderr.write(`bench: pipeline phase 2, ${opts.rate} deliveries/s for ${opts.seconds} s\n`);
    const latency = await latencyPhase(ctx, nextId);

    const result: PipelineResult = {
      options: opts,
      schema: db.schema,
      postgresVersion: version?.v ?? 'unknown',
      synchronousCommit: version?.sc ?? 'unknown',
      redisVersion,
      busyBeforePct,
      throughput: throughput.result,
      direct,
      ratio: throughput.result.pipelineRate / direct.rate,
      latency,
      ok: throughput.result.integrity.ok && latency.integrity.ok,
    };
    return { result, report: report(result) };
  } finally {
    await queue?.close();
    if (listener) await stopChild(listener.child, 5000);
    if (worker && worker !== listener) await stopChild(worker.child, 5000);
    await redis.destroy();
    // On failure the exit hook tries again.
    await db.drop().catch((err: unknown) => process.stderr.write(`bench: DROP SCHEMA ${db.schema}: ${err}\n`));
    removeTempDir(spoolDir);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Report

const cpuLine = (label: string, c: CpuUse) =>
  `  ${label}: listener ${f(c.listener, 0)}, worker ${f(c.worker, 0)}, redis ${f(c.redis, 0)}, ` +
  `generator ${f(c.generator, 0)}, postgres ${f(c.postgres, 0)}, other ${f(c.other, 0)}`;

const checkCell = (i: Integrity) =>
  `${i.ok ? 'ok' : 'FAILED'}: ${i.jobs} jobs and ${i.rows} rows for ${i.acknowledged} acknowledged, ${i.missing} missing, ` +
  `${i.duplicates} duplicates, ${i.non2xx} non-2xx, ${i.errors} errors ` +
  `(${i.spooled} answered from the listener's spool, queued later)`;

function report(r: PipelineResult): string[] {
  const { throughput: t, direct: d, latency: l, options: o } = r;
  const phases: [string, CpuUse][] = [
    ['phase 1', t.cpu],
    ['the direct insert', d.cpu],
    ['phase 2', l.cpu],
  ];
  const disturbed = phases.filter(([, c]) => c.other > QUIET_PCT);
  return [
    `Pipeline: listener → Redis → worker (WORKER_CONCURRENCY ${o.workerConcurrency}) → postgres handler (pool of ${t.workerPoolSize} seen); ` +
      `${o.mode === 'start' ? 'listener and worker in one process (start)' : 'listener and worker as two processes (listen, work)'}; ` +
      `PostgreSQL ${r.postgresVersion} (synchronous_commit ${r.synchronousCommit}), redis ${r.redisVersion}, ` +
      `machine busy before start ${f(r.busyBeforePct, 0)}% of a core`,
    `Throughput: ${o.events} unique deliveries posted ${o.connections} at a time (undici, this process), until every one was a row`,
    table(
      ['measure', 'rows', 'seconds', 'events/s'],
      [
        [
          'pipeline: first received_at → last stored_at',
          String(t.integrity.rows),
          f(t.pipelineSeconds),
          f(t.pipelineRate, 0),
        ],
        [
          '  listener: HTTP acknowledgements, worker running',
          String(t.integrity.acknowledged),
          f(t.listenerSeconds),
          f(t.listenerRate, 0),
        ],
        [
          '  worker: first → last stored_at',
          String(t.integrity.rows),
          f(t.integrity.rows / t.workerRate),
          f(t.workerRate, 0),
        ],
        [
          '  worker alone: backlog after the last receipt',
          String(t.drainRows),
          f(t.drainRows / t.drainRate),
          f(t.drainRate, 0),
        ],
        [
          `direct INSERT (reference): pool ${d.poolSize}, ${d.concurrency} in flight`,
          String(d.events),
          f(d.seconds),
          f(d.rate, 0),
        ],
      ],
    ),
    `pipeline events/s ÷ direct-insert events/s: ${f(r.ratio, 3)}`,
    'CPU, % of one core (postgres: every postgres process of the machine; other: foreign load, unattributed kernel time):',
    cpuLine('phase 1', t.cpu),
    cpuLine('direct INSERT (generator = this process, the inserter)', d.cpu),
    cpuLine('phase 2', l.cpu),
    '',
    `Fixed rate: ${o.rate} deliveries/s for ${o.seconds} s (open loop, benchmarks/open-loop.ts, after ${OPEN_WARMUP_S} s at the rate); ms.`,
    'end to end = stored_at − received_at per row (SQL); ack = HTTP answer, from the intended start of the request',
    table(
      ['rate', 'achieved/s', 'rows', 'e2e p50', 'p90', 'p99', 'max', 'ack p50', 'ack p99', 'ack max'],
      [
        [
          String(l.rate),
          f(l.achievedRate, 0),
          String(l.measuredRows),
          f(l.e2e.p50),
          f(l.e2e.p90),
          f(l.e2e.p99),
          f(l.e2e.max),
          f(l.ack.p50),
          f(l.ack.p99),
          f(l.ack.max),
        ],
      ],
    ),
    '',
    'Every acknowledged delivery exactly one row:',
    `  phase 1: ${checkCell(t.integrity)}`,
    `  phase 2: ${checkCell(l.integrity)}`,
    ...disturbed.map(([label, c]) => `Warning: ${f(c.other, 0)}% of a core used by other work during ${label}`),
  ];
}

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'skip-build': { type: 'boolean' } } });
  const opts = pipelineOptionsFromEnv();
  const skipBuild = values['skip-build'] || process.env.BENCH_SKIP_BUILD === '1';
  if (!skipBuild || !existsSync(join(ROOT, 'dist/src/cli.js'))) {
    process.stderr.write('bench: npm run build\n');
    const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' });
    if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}\n${build.stderr}`);
  }
  const env = machineInfo();
  const startedAt = performance.now();
  const { result, report: lines } = await runPipelineBenchmark(opts);
  const wallTimeS = (performance.now() - startedAt) / 1000;
  const file = join(ROOT, 'bench-results', `pipeline-${env.date.replace(/[:.]/g, '-')}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify({ machine: env, wallTimeS, ...result }, null, 2)}\n`);
  process.stdout.write(
    `\nPipeline benchmark — node ${env.node}, nproc ${env.nproc}, ${env.cpuModel}, commit ${env.commit}, ${env.date}\n` +
      `${lines.join('\n')}\n\nWall time ${f(wallTimeS, 0)} s (build excluded)\nResults written to ${file.slice(ROOT.length + 1)}\n`,
  );
  if (!result.ok) process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    () => process.exit(process.exitCode ?? 0),
    (err: unknown) => {
      process.stderr.write(`\nbench: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
