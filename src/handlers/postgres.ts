/**
 * Built-in `postgres` handler: one row per delivery in `<schema>.sellsy_events` (`DATABASE_URL`, `DATABASE_SCHEMA`).
 *
 * Input: every job (parsed events and `unknown` deliveries alike). It runs before `sellsy-fetch`, so that a delivery
 * is stored even when its object cannot be fetched; the object is not stored (it is the record's current state, not
 * part of the delivery).
 * Output: one row keyed by the delivery id, the raw body exact (`raw_body`, or `raw_body_base64` for bytes that are not
 * UTF-8 text PostgreSQL can hold), and the parsed event as jsonb. A NUL or a lone surrogate in a parsed field (which
 * text and jsonb refuse) is stored as U+FFFD: anything the body holds is stored, the raw body exact.
 * Guarantee: a delivery is stored at most once: `INSERT … ON CONFLICT DO NOTHING` on the delivery id and on the dedup
 * key, so a retried job, or the same delivery received twice, never adds a second row.
 * Failures: a connection or server error is an ordinary Error (the job is retried); a data error that no retry can fix
 * (SQLSTATE class 22 data exception or 23 integrity violation, except unique_violation) is a `PermanentError`.
 *
 * `openEventStore` creates the schema if absent and applies pending migrations before it returns.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { PermanentError } from '../errors.ts';
import type { Handler, HandlerContext } from './handler.ts';

export interface EventStore {
  /** The handler to register: stores the delivery, once. */
  handler: Handler;
  /** Applies pending migrations; already run by `openEventStore`, harmless to run again. */
  migrate(): Promise<void>;
  /** Ends the pool; later calls do nothing. */
  close(): Promise<void>;
}

/**
 * The migrations, in order; a version is never edited once released, only followed by a new one.
 *
 * Hand-written rather than node-pg-migrate: there is one table, and node-pg-migrate is a CLI that reads migration
 * files from a directory; an installed package would have to ship those files and run a second tool before it starts.
 * Here the service migrates itself on start, in one transaction under an advisory lock.
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
];

/** First key of the two-int advisory lock: this service's migrations (the second key is the schema's hash). */
const LOCK_NAMESPACE = 0x5e115e; // "sellse"

/** SQLSTATE of the unique_violation that ON CONFLICT DO NOTHING already absorbs: never a permanent failure. */
const UNIQUE_VIOLATION = '23505';

export async function openEventStore(
  opts: { url: string; schema: string; poolSize?: number },
  log: Logger,
): Promise<EventStore> {
  const logger = log.child({ component: 'postgres' });
  // One connection per concurrent job by default (a smaller pool makes jobs wait, and past connectionTimeoutMillis
  // fail an attempt), bounded so that many workers do not exhaust max_connections (100 by default).
  const pool = new pg.Pool({ connectionString: opts.url, max: opts.poolSize ?? 10, connectionTimeoutMillis: 5000 });
  // An idle client whose server goes away emits `error` on the pool; unheard, it would crash the process. The pool
  // drops that client and the next query connects again.
  pool.on('error', (err) => {
    logger.warn({ err: err.message, code: (err as { code?: string }).code }, 'postgres idle connection error');
  });
  const schema = pg.escapeIdentifier(opts.schema);
  const migrate = () => runMigrations(pool, opts.schema, logger);
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= pool.end();
    return closing;
  };
  try {
    await migrate();
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
  const insert = `
    INSERT INTO ${schema}.sellsy_events (
      delivery_id, dedup_key, job_name, account, event_type, event, related_type, related_id, owner_type, owner_id,
      event_timestamp, received_at, content_type, raw_body, raw_body_base64, event_json, parse_problem,
      signature_status
    ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
    ON CONFLICT DO NOTHING`;

  const handler: Handler = async (event, context) => {
    let result: pg.QueryResult;
    try {
      result = await pool.query(insert, rowOf(event, context));
    } catch (err) {
      throw classify(err, context.deliveryId);
    }
    if (result.rowCount === 0) context.log.debug({ deliveryId: context.deliveryId }, 'postgres: already stored');
  };
  return { handler, migrate, close };
}

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

function rowOf(event: Parameters<Handler>[0], context: HandlerContext): unknown[] {
  const { data } = context;
  let rawBody = data.rawBody;
  let rawBodyBase64 = data.rawBodyBase64 ?? null;
  // PostgreSQL text cannot hold U+0000: keep the exact bytes in base64 (as the queue contract does for bytes that
  // are not UTF-8) and a lossy text copy, rather than fail the delivery for good.
  if (rawBody.includes('\0')) {
    rawBodyBase64 ??= Buffer.from(rawBody, 'utf8').toString('base64');
    rawBody = rawBody.replaceAll('\0', '\uFFFD');
  }
  return [
    context.deliveryId,
    data.dedupKey,
    text(context.name),
    text(data.account),
    text(event?.eventType ?? null),
    text(event?.event ?? null),
    text(event?.relatedType ?? null),
    text(event?.relatedId ?? null),
    text(event?.ownerType ?? null),
    text(event?.ownerId ?? null),
    eventTimestamp(event?.timestamp ?? null),
    data.receivedAt,
    text(data.contentType),
    rawBody,
    rawBodyBase64,
    jsonb(event),
    data.parseProblem,
    data.signature.status,
  ];
}

/** Years 0001 to 9999: what an ISO 8601 string with a four-digit year, and so PostgreSQL, reads back unchanged. */
const MIN_MS = -62_135_596_800_000;
const MAX_MS = 253_402_300_799_999;

/** Sellsy's `timestamp` is unix seconds as a string: a Date when it is a number in range, else null. */
function eventTimestamp(value: string | null): Date | null {
  if (value === null || !/^-?\d+(\.\d+)?$/.test(value.trim())) return null;
  const ms = Number(value) * 1000;
  return ms >= MIN_MS && ms <= MAX_MS ? new Date(ms) : null;
}

/**
 * A parsed string as PostgreSQL text can hold it: text and jsonb reject U+0000, and jsonb rejects a lone surrogate
 * (`\ud800`, which JSON.parse lets through from an escape); both become U+FFFD. These fields come from the body,
 * which anyone can make hold them: failing the delivery for good would lose it and skip the handlers after this one.
 * `raw_body` (or `raw_body_base64`) keeps what was received.
 */
function text<T extends string | null>(value: T): T {
  return (value === null ? value : value.replace(UNSTORABLE, '\uFFFD')) as T;
}

/** U+0000 and lone surrogates (with the `u` flag, a surrogate pair is one code point, not `\p{Cs}`). */
const UNSTORABLE = /[\0\p{Cs}]/gu;

/** A value as jsonb text, or null when absent. Always stringified here: pg would send a JS array as a PostgreSQL array. */
function jsonb(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  const json = JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v === 'string') return text(v);
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).some((k) => text(k) !== k)) {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [text(k), x]));
    }
    return v;
  });
  return json === undefined ? null : json;
}

/** A data error no retry can fix becomes a PermanentError; anything else is returned as is (retried). */
function classify(err: unknown, deliveryId: string): unknown {
  if (!(err instanceof pg.DatabaseError) || err.code === undefined || err.code === UNIQUE_VIOLATION) return err;
  if (!err.code.startsWith('22') && !err.code.startsWith('23')) return err;
  return new PermanentError(
    `postgres: delivery ${deliveryId} cannot be stored: ${err.message} (SQLSTATE ${err.code})`,
    { cause: err },
  );
}
