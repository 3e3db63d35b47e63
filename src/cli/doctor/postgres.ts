/**
 * `postgres`: the PostgreSQL of DATABASE_URL answers, and whether the postgres handler's table exists yet.
 */
import pg from 'pg';
import type { Config } from '../../config/config.ts';
import { redactUrl } from '../../redact.ts';
import { type CheckResult, describe, fail, ok, TIMEOUT_MS } from './check.ts';

export async function postgresCheck(postgres: NonNullable<Config['postgres']>): Promise<CheckResult[]> {
  const where = redactUrl(postgres.url, 'DATABASE_URL');
  const client = new pg.Client({
    connectionString: postgres.url,
    connectionTimeoutMillis: TIMEOUT_MS,
    query_timeout: TIMEOUT_MS,
    application_name: 'sellsy-webhooks doctor',
  });
  client.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${(TIMEOUT_MS * 2) / 1000} s`)), TIMEOUT_MS * 2);
  });
  try {
    const { version, table } = await Promise.race([
      (async () => {
        await client.connect();
        const v = await client.query<{ server_version: string }>('SHOW server_version');
        const t = await client.query<{ exists: boolean }>(
          "SELECT to_regclass(format('%I.%I', $1::text, 'sellsy_events')) IS NOT NULL AS exists",
          [postgres.schema],
        );
        return { version: v.rows[0]?.server_version ?? '?', table: t.rows[0]?.exists === true };
      })(),
      deadline,
    ]);
    const tableNote = table
      ? `table ${postgres.schema}.sellsy_events exists`
      : `table ${postgres.schema}.sellsy_events does not exist yet (the worker creates it at start)`;
    return [ok('postgres', `${where} answers (PostgreSQL ${version}); ${tableNote}`)];
  } catch (err) {
    return [
      fail(
        'postgres',
        `${where} did not answer: ${describe(err)}`,
        'check DATABASE_URL and that PostgreSQL accepts connections from here; meanwhile the postgres handler retries each job, then leaves it a dead letter',
      ),
    ];
  } finally {
    clearTimeout(timer);
    client.end().catch(() => undefined);
  }
}
