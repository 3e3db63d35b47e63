/**
 * The pipeline benchmark's phases: throughput (phase 1), the direct-insert reference, and latency at a fixed rate
 * (phase 2). See the header of benchmarks/pipeline.ts for what each measures.
 */
import pg from 'pg';
import { type PostResult, post, runOpenLoop } from '../lib/load.ts';
import { CpuMeter, cpuSecondsOfCommand } from '../lib/machine.ts';
import { sleep } from '../lib/processes.ts';
import { type Service, spooledSoFar } from '../lib/service.ts';
import { type Db, integrity, waitForRows } from './db.ts';
import type { PipelineOptions } from './options.ts';
import type { CpuUse, DirectInsertResult, LatencyResult, Pids, ThroughputResult } from './results.ts';

/** The worker's connections to PostgreSQL carry this application_name (PGAPPNAME), so its pool size can be seen. */
export const workerAppName = (schema: string) => `${schema}-worker`;
export const WARMUP_EVENTS = 1000;
/** Seconds of open-loop traffic at the fixed rate before phase 2's measured window (new connections, JIT). */
export const OPEN_WARMUP_S = 1;

/** CPU of the processes of a phase, every PostgreSQL process of the machine included. */
const newMeter = (pids: Pids) => new CpuMeter(pids, { postgres: () => cpuSecondsOfCommand('postgres') });

export interface Context {
  opts: PipelineOptions;
  db: Db;
  listenerUrl: string;
  worker: Service;
  pids: Pids;
  /** Jobs in the ingest queue, every state: what the listener has created so far. */
  jobsSoFar(): Promise<number>;
}

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

export async function throughputPhase(
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
 * The reference's pool: one connection per insert in flight, at most 20, as the handler had when it sent one INSERT
 * per job. Not the connections the worker is seen to use: the batching handler needs only a few, and a reference held
 * to those would be a slower one-row-per-INSERT, flattering the ratio.
 */
export const referencePoolSize = (opts: PipelineOptions) => Math.min(opts.workerConcurrency, 20);

/**
 * The reference: phase 1's rows inserted again by this process, one INSERT each (the handler's single-row statement),
 * through a pool of `referencePoolSize` with WORKER_CONCURRENCY inserts in flight, into an empty copy of the table.
 */
export async function directInsertPhase(ctx: Context, poolSize: number): Promise<DirectInsertResult> {
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

export async function latencyPhase(ctx: Context, from: number): Promise<LatencyResult> {
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
