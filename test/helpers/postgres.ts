/**
 * A private schema per test in the test PostgreSQL (`TEST_DATABASE_URL`), dropped afterwards. Tests never touch a
 * schema they did not make.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { connectPool } from '../../benchmarks/lib/postgres.ts';
import { redactUrl } from '../../src/redact.ts';

export function testDatabaseUrl(): string {
  return process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
}

export interface TempSchema {
  url: string;
  /** `test_<hex>`: reserved, not created (the code under test creates it); dropped with everything in it. */
  schema: string;
  query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  drop(): Promise<void>;
}

export async function tempSchema(): Promise<TempSchema> {
  const url = testDatabaseUrl();
  const schema = `test_${randomBytes(6).toString('hex')}`;
  const pool = await connectPool(
    url,
    (err) =>
      `The postgres tests need a PostgreSQL they may create schemas in, and none answered at ${redactUrl(url, 'TEST_DATABASE_URL')} ` +
      `(${err.message}). Set TEST_DATABASE_URL to one (postgres://user:password@host:5432/database), ` +
      'or install and start one here (Debian/Ubuntu: apt-get install postgresql && service postgresql start; ' +
      'then as the postgres user: createdb test, with trust or a password for postgres on 127.0.0.1 in pg_hba.conf).',
  );
  let dropped = false;
  return {
    url,
    schema,
    async query<R extends pg.QueryResultRow>(sql: string, params?: unknown[]) {
      return (await pool.query<R>(sql, params)).rows;
    },
    async drop() {
      if (dropped) return;
      dropped = true;
      try {
        await pool.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`);
      } finally {
        await pool.end();
      }
    },
  };
}
