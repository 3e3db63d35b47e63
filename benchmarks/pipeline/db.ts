/**
 * The pipeline benchmark's PostgreSQL: a fresh schema `bench_<hex>`, dropped at the end, on errors and on
 * SIGINT/SIGTERM too; the waits for the worker's table and rows; and the check that every acknowledged delivery is
 * exactly one row.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { connectPool } from '../lib/postgres.ts';
import { baseEnv, isRunning, ROOT, sleep } from '../lib/processes.ts';
import type { Service } from '../lib/service.ts';
import { waitFor } from '../lib/wait.ts';
import type { Integrity } from './results.ts';

/** DROP SCHEMA from a synchronous child: what the `exit` hook can still do after a SIGINT. */
const DROP_SCRIPT = `
import pg from 'pg';
const client = new pg.Client({ connectionString: process.env.BENCH_DB, connectionTimeoutMillis: 5000 });
await client.connect();
await client.query("SET lock_timeout = '10s'");
await client.query('DROP SCHEMA IF EXISTS ' + pg.escapeIdentifier(process.env.BENCH_SCHEMA) + ' CASCADE');
await client.end();
`;

export interface Db {
  pool: pg.Pool;
  schema: string;
  /** `<schema>.sellsy_events`, quoted. */
  events: string;
  query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  drop(): Promise<void>;
}

export async function openDb(url: string): Promise<Db> {
  const schema = `bench_${randomBytes(6).toString('hex')}`;
  const pool = await connectPool(
    url,
    (err) =>
      `the pipeline benchmark needs a PostgreSQL it may create a schema in, and none answered at BENCH_DATABASE_URL (${err.message})`,
  );
  const quoted = pg.escapeIdentifier(schema);
  let dropped = false;
  // SIGINT/SIGTERM (lib/processes.ts exits the process) or an uncaught error: children are killed by its exit hook,
  // the schema is dropped here, synchronously.
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
export async function waitForRows(
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
export async function integrity(
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

export async function waitForTable(db: Db, worker: Service, timeoutMs: number): Promise<void> {
  await waitFor(
    async () => {
      const [r] = await db.query<{ oid: string | null }>('SELECT to_regclass($1)::text AS oid', [db.events]);
      if (r?.oid) return true;
      if (!isRunning(worker.child))
        throw new Error(`the worker exited (${worker.child.exitCode ?? worker.child.signalCode})\n${worker.output()}`);
      return false;
    },
    timeoutMs,
    `the worker to create ${db.events}`,
    100,
  );
}
