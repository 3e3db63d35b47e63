/** A PostgreSQL pool that has answered once: shared by the pipeline benchmark and the tests' private schemas. */
import pg from 'pg';

/**
 * A small pool on `url`, checked with `SELECT 1`; if nothing answers, the pool is closed and the error thrown is
 * `explain(cause)` (which says what needs the database and how to provide one).
 */
export async function connectPool(url: string, explain: (cause: Error) => string): Promise<pg.Pool> {
  const pool = new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 5000 });
  pool.on('error', () => undefined);
  try {
    await pool.query('SELECT 1');
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new Error(explain(err as Error), { cause: err });
  }
  return pool;
}
