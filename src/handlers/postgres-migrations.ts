/**
 * The `postgres` handler's schema (src/handlers/postgres.ts): versioned migrations, applied at start in one transaction
 * under an advisory lock, then the indexes built CONCURRENTLY after it.
 */
import pg from 'pg';
import type { Logger } from 'pino';

/** Applies pending migrations, then builds the indexes they call for that are missing or unfinished. */
export async function migrateStore(pool: pg.Pool, schemaName: string, log: Logger): Promise<void> {
  await runMigrations(pool, schemaName, log);
  await buildIndexes(pool, schemaName, log);
}

/**
 * The migrations, in order; a version is never edited once released, only followed by a new one.
 *
 * Hand-written rather than node-pg-migrate: there is one table, and node-pg-migrate is a CLI that reads migration
 * files from a directory; an installed package would have to ship those files and run a second tool before it starts.
 * Here the service migrates itself on start, in one transaction under an advisory lock; the indexes a migration adds
 * to a table that may already be large are built after it (INDEXES).
 */
const MIGRATIONS: readonly { version: number; up: (schema: string) => string }[] = [
  {
    version: 1,
    up: (s) => `
      CREATE TABLE ${s}.sellsy_events (
        delivery_id uuid PRIMARY KEY,
        dedup_key text NOT NULL UNIQUE,
        job_name text NOT NULL,
        account text,
        event_type text,
        event text,
        related_type text,
        related_id text,
        owner_type text,
        owner_id text,
        event_timestamp timestamptz,
        received_at timestamptz NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now(),
        content_type text,
        raw_body text NOT NULL,
        raw_body_base64 text,
        event_json jsonb,
        parse_problem text,
        signature_status text NOT NULL
      );
      CREATE INDEX sellsy_events_record_idx ON ${s}.sellsy_events (account, related_type, related_id);
    `,
  },
  {
    // Who made the job (the queue contract's `source`): every row stored before is a webhook delivery.
    version: 2,
    up: (s) => `ALTER TABLE ${s}.sellsy_events ADD COLUMN source text NOT NULL DEFAULT 'webhook';`,
  },
  {
    // What `replay --destination --since` needs to send a stored delivery again (src/handlers/postgres-deliveries.ts):
    // the signature header and scope (a job queued `unchecked` is verified again by the worker that runs it; rows
    // stored before have none). Its index, to read the rows in the order they were stored, is in INDEXES.
    version: 3,
    up: (s) => `ALTER TABLE ${s}.sellsy_events ADD COLUMN signature_header text, ADD COLUMN signature_scope text;`,
  },
];

/**
 * Indexes built after the migrations' transaction, CONCURRENTLY: inside it, a build on a large table would hold a
 * SHARE lock for as long as it takes (the inserts of workers still running wait) and could outlast a
 * `statement_timeout` set on the role or database (the migration rolls back, and every worker fails to start again and
 * again). Nothing needs them to be correct, only to be fast: a worker that finds one missing or unfinished starts anyway.
 */
const INDEXES: readonly { name: string; after: number; columns: string }[] = [
  // `replay --destination --since` reads the rows by (stored_at, delivery_id), page after page.
  { name: 'sellsy_events_stored_idx', after: 3, columns: '(stored_at, delivery_id)' },
];

/** First key of the two-int advisory lock: this service's migrations (the second key is the schema's hash). */
const LOCK_NAMESPACE = 0x5e115e; // "sellse"
/** First key of the advisory lock held while INDEXES are built (the second key is the schema's hash). */
const INDEX_LOCK_NAMESPACE = 0x5e115f;

async function runMigrations(pool: pg.Pool, schemaName: string, log: Logger): Promise<void> {
  const schema = pg.escapeIdentifier(schemaName);
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    // Taken before anything is read or created: workers starting together queue here, and the second one finds
    // everything done. (Even `CREATE SCHEMA IF NOT EXISTS` fails on a duplicate key when two run at once.)
    await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_NAMESPACE, schemaName]);
    // Checked first, so a role without CREATE on the database runs against a schema an administrator made.
    const exists = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schemaName]);
    if (exists.rowCount === 0) await client.query(`CREATE SCHEMA ${schema}`);
    const table = await client.query('SELECT to_regclass($1) AS oid', [`${schema}.sellsy_webhooks_migrations`]);
    if (table.rows[0]?.oid === null) {
      await client.query(
        `CREATE TABLE ${schema}.sellsy_webhooks_migrations (
          version int PRIMARY KEY,
          applied_at timestamptz NOT NULL DEFAULT now()
        )`,
      );
    }
    const applied = await client.query<{ version: number }>(`SELECT version FROM ${schema}.sellsy_webhooks_migrations`);
    const done = new Set(applied.rows.map((r) => r.version));
    for (const migration of MIGRATIONS) {
      if (done.has(migration.version)) continue;
      await client.query(migration.up(schema));
      await client.query(`INSERT INTO ${schema}.sellsy_webhooks_migrations (version) VALUES ($1)`, [migration.version]);
      log.info({ schema: schemaName, version: migration.version }, 'postgres migration applied');
    }
    await client.query('COMMIT');
  } catch (err) {
    broken = err instanceof Error ? err : new Error(String(err));
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    // A client whose transaction failed is destroyed rather than handed back in an unknown state.
    client.release(broken);
  }
}

/**
 * Builds the INDEXES that are missing or unfinished, one worker at a time and none waiting for it.
 *
 * The lock is tried, not waited for: CREATE INDEX CONCURRENTLY waits for every transaction older than its snapshot,
 * and a worker blocked on the lock would be one (a deadlock). A worker that does not get it starts without the index:
 * another is building it. An index that is there but not valid is a build that failed or was killed (CONCURRENTLY
 * leaves it so); only the lock's holder sees it so, and drops it and builds it again. A failed build is logged, not
 * thrown: the worker stores deliveries without the index, and the next start builds it.
 */
async function buildIndexes(pool: pg.Pool, schemaName: string, log: Logger): Promise<void> {
  const schema = pg.escapeIdentifier(schemaName);
  const pending = async () => {
    const applied = await pool.query<{ v: number | null }>(
      `SELECT max(version) AS v FROM ${schema}.sellsy_webhooks_migrations`,
    );
    const version = applied.rows[0]?.v ?? 0;
    const todo: (typeof INDEXES)[number][] = [];
    for (const index of INDEXES) {
      if (version < index.after) continue;
      const state = await indexState(pool, `${schema}.${pg.escapeIdentifier(index.name)}`);
      if (state !== 'valid') todo.push(index);
    }
    return todo;
  };
  if ((await pending()).length === 0) return;
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    const locked = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked', [
      INDEX_LOCK_NAMESPACE,
      schemaName,
    ]);
    if (locked.rows[0]?.locked !== true) {
      log.info({ schema: schemaName }, 'postgres indexes being built by another worker: starting without waiting');
      return;
    }
    // The role's or database's timeouts are for ordinary statements; a build takes as long as the table needs.
    await client.query('SET statement_timeout = 0');
    await client.query('SET lock_timeout = 0');
    for (const index of await pending()) {
      const name = `${schema}.${pg.escapeIdentifier(index.name)}`;
      const started = Date.now();
      try {
        if ((await indexState(client, name)) === 'invalid') {
          log.warn({ schema: schemaName, index: index.name }, 'postgres index left unfinished by a build: rebuilding');
          await client.query(`DROP INDEX CONCURRENTLY IF EXISTS ${name}`);
        }
        await client.query(
          `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${pg.escapeIdentifier(index.name)} ON ${schema}.sellsy_events ${index.columns}`,
        );
        log.info({ schema: schemaName, index: index.name, ms: Date.now() - started }, 'postgres index built');
      } catch (err) {
        log.warn(
          { schema: schemaName, index: index.name, err: (err as Error).message, code: (err as { code?: string }).code },
          'postgres index build failed: running without it (the next start builds it again)',
        );
      }
    }
    await client.query('RESET statement_timeout');
    await client.query('RESET lock_timeout');
    await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [INDEX_LOCK_NAMESPACE, schemaName]);
  } catch (err) {
    broken = err instanceof Error ? err : new Error(String(err));
    throw err;
  } finally {
    // Destroyed on an error: the session's lock and settings go with it.
    client.release(broken);
  }
}

/** `missing`, `invalid` (a CONCURRENTLY build that failed, or one still running) or `valid`. */
async function indexState(db: pg.Pool | pg.PoolClient, name: string): Promise<'missing' | 'invalid' | 'valid'> {
  const result = await db.query<{ valid: boolean | null }>(
    'SELECT (SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)) AS valid',
    [name],
  );
  const valid = result.rows[0]?.valid ?? null;
  return valid === null ? 'missing' : valid ? 'valid' : 'invalid';
}
