/**
 * Built-in `postgres` handler: one row per delivery in `<schema>.sellsy_events` (`DATABASE_URL`, `DATABASE_SCHEMA`).
 *
 * Input: every job (parsed events and `unknown` deliveries alike). It runs before `sellsy-fetch`, so that a delivery
 * is stored even when its object cannot be fetched; the object is not stored (it is the record's current state, not
 * part of the delivery).
 * Output: one row keyed by the delivery id, the raw body exact (`raw_body`, or `raw_body_base64` for bytes that are not
 * UTF-8 text PostgreSQL can hold), and the parsed event as jsonb. A NUL or a lone surrogate in a parsed field (which
 * text and jsonb refuse) is stored as U+FFFD: anything the body holds is stored, the raw body exact.
 * Batching: the rows of jobs running at the same time share one multi-row INSERT (group commit, src/handlers/
 * group-commit.ts): a job's row goes at once when a statement is free, else with the rows that arrive while it waits.
 * Each job still resolves only once its own row is committed, or was already there.
 * Guarantee: a delivery is stored at most once: `INSERT … ON CONFLICT DO NOTHING` on the delivery id and on the dedup
 * key, so a retried job, or the same delivery received twice (in one batch too), never adds a second row.
 * Failures: a connection or server error is an ordinary Error for every job of the statement (each is retried); a
 * data error that no retry can fix (SQLSTATE class 22 data exception or 23 integrity violation, except
 * unique_violation) is a `PermanentError`, for its own job only: a batch that fails so is sent again one row per
 * INSERT.
 *
 * `openEventStore` creates the schema if absent and applies pending migrations before it returns
 * (src/handlers/postgres-migrations.ts).
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { PermanentError } from '../errors.ts';
import { GroupCommit } from './group-commit.ts';
import type { Handler, HandlerContext } from './handler.ts';
import { migrateStore } from './postgres-migrations.ts';

export interface EventStore {
  /** The handler to register: stores the delivery, once. */
  handler: Handler;
  /** Applies pending migrations; already run by `openEventStore`, harmless to run again. */
  migrate(): Promise<void>;
  /** Ends the pool; later calls do nothing. */
  close(): Promise<void>;
}

/** SQLSTATE of the unique_violation that ON CONFLICT DO NOTHING already absorbs: never a permanent failure. */
const UNIQUE_VIOLATION = '23505';

/** The columns the handler writes, in the order of `rowOf`, with their types (`stored_at` is the server's now()). */
const COLUMNS = [
  ['delivery_id', 'uuid'],
  ['dedup_key', 'text'],
  ['job_name', 'text'],
  ['account', 'text'],
  ['event_type', 'text'],
  ['event', 'text'],
  ['related_type', 'text'],
  ['related_id', 'text'],
  ['owner_type', 'text'],
  ['owner_id', 'text'],
  ['event_timestamp', 'timestamptz'],
  ['received_at', 'timestamptz'],
  ['content_type', 'text'],
  ['raw_body', 'text'],
  ['raw_body_base64', 'text'],
  ['event_json', 'jsonb'],
  ['parse_problem', 'text'],
  ['signature_status', 'text'],
  ['source', 'text'],
  ['signature_header', 'text'],
  ['signature_scope', 'text'],
] as const;

/** One delivery's values, in the order of COLUMNS. */
type Row = unknown[];

/**
 * Group commit (src/handlers/group-commit.ts): statements in flight at most, rows per statement at most, and the size
 * of a statement's values past its first row (large bodies go in smaller batches).
 */
const BATCH_STATEMENTS = 2;
const BATCH_MAX_ROWS = 100;
const BATCH_MAX_BYTES = 8 * 1024 * 1024;

/**
 * `one`: a row. `many`: rows as one array per column, `unnest`ed: one statement text (prepared once per connection)
 * and one parameter per column whatever the number of rows. Both `ON CONFLICT DO NOTHING` on every unique key; within one
 * statement too, the second row with a dedup key is skipped.
 */
function eventStatements(schema: string): { one: string; many: string } {
  const into = `INSERT INTO ${schema}.sellsy_events (${COLUMNS.map(([name]) => name).join(', ')})`;
  return {
    one: `${into} VALUES (${COLUMNS.map((_, i) => `$${i + 1}`).join(', ')}) ON CONFLICT DO NOTHING`,
    many:
      `${into} SELECT * FROM unnest(${COLUMNS.map(([, type], i) => `$${i + 1}::${type}[]`).join(', ')}) ` +
      'ON CONFLICT DO NOTHING RETURNING delivery_id',
  };
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** About the bytes a row sends (its strings' lengths), to keep a batch's values well under PostgreSQL's 1 GB. */
function sizeOf(row: Row): number {
  let n = 0;
  for (const value of row) if (typeof value === 'string') n += value.length;
  return n;
}

export async function openEventStore(
  opts: { url: string; schema: string; poolSize?: number },
  log: Logger,
): Promise<EventStore> {
  const logger = log.child({ component: 'postgres' });
  // Connections open only when used: BATCH_STATEMENTS for the batches; the others when a batch's rows are sent again
  // one by one (all at once: a smaller pool makes them wait, past connectionTimeoutMillis failing an attempt).
  // Bounded so that many workers do not exhaust max_connections (100 by default).
  const pool = new pg.Pool({ connectionString: opts.url, max: opts.poolSize ?? 10, connectionTimeoutMillis: 5000 });
  // An idle client whose server goes away emits `error` on the pool; unheard, it would crash the process. The pool
  // drops that client and the next query connects again.
  pool.on('error', (err) => {
    logger.warn({ err: err.message, code: (err as { code?: string }).code }, 'postgres idle connection error');
  });
  const schema = pg.escapeIdentifier(opts.schema);
  const migrate = () => migrateStore(pool, opts.schema, logger);
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
  const statements = eventStatements(schema);
  const rows = new GroupCommit<Row>(
    {
      async insertMany(batch) {
        // In dedup-key order: two statements holding the same keys (two worker processes) then wait on each other's
        // rows in the same order rather than deadlock.
        const sorted = [...batch].sort((a, b) => compare(a[1] as string, b[1] as string));
        const columns = COLUMNS.map((_, c) => sorted.map((row) => row[c]));
        const result = await pool.query<{ delivery_id: string }>({
          name: 'sellsy-events-insert-many',
          text: statements.many,
          values: columns,
        });
        // A delivery id twice in one batch (the same job run twice at once) is stored once: the first one counts.
        const stored = new Set(result.rows.map((r) => r.delivery_id));
        return batch.map((row) => stored.delete(String(row[0]).toLowerCase()));
      },
      async insertOne(row) {
        const result = await pool.query({ name: 'sellsy-events-insert-one', text: statements.one, values: row });
        return result.rowCount !== 0;
      },
      isRowError,
    },
    { statements: BATCH_STATEMENTS, maxRows: BATCH_MAX_ROWS, maxBytes: BATCH_MAX_BYTES, sizeOf },
  );

  const handler: Handler = async (event, context) => {
    let stored: boolean;
    try {
      stored = await rows.submit(rowOf(event, context));
    } catch (err) {
      throw classify(err, context.deliveryId);
    }
    if (!stored) context.log.debug({ deliveryId: context.deliveryId }, 'postgres: already stored');
  };
  return { handler, migrate, close };
}

function rowOf(event: Parameters<Handler>[0], context: HandlerContext): Row {
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
    data.source ?? 'webhook',
    text(data.signature.header),
    data.signature.scope,
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

/** A data exception (class 22) or an integrity violation (class 23): what a row's values can cause. */
function isRowError(err: unknown): err is pg.DatabaseError & { code: string } {
  return (
    err instanceof pg.DatabaseError && (err.code?.startsWith('22') === true || err.code?.startsWith('23') === true)
  );
}

/** A data error no retry can fix becomes a PermanentError; anything else is returned as is (retried). */
function classify(err: unknown, deliveryId: string): unknown {
  if (!isRowError(err) || err.code === UNIQUE_VIOLATION) return err;
  return new PermanentError(
    `postgres: delivery ${deliveryId} cannot be stored: ${err.message} (SQLSTATE ${err.code})`,
    { cause: err },
  );
}
