/**
 * The `postgres` handler's rows (src/handlers/postgres.ts) read back as the jobs they were stored from: how
 * `replay --destination NAME --since T` (src/cli/replay-destination.ts) sends a destination the deliveries older
 * than the kept jobs.
 *
 * Window: `stored_at`, the time the worker stored the delivery, the counterpart of a kept job's finish time; so one
 * `--since` selects the same deliveries from both, and a delivery that waited (in the spool, or in the queue during
 * an outage) counts from when it was handled. Order: `(stored_at, delivery_id)`, read by keyset pages on the index of
 * migration 3 (built by the workers after the migration; until it is valid the pages are the same, only slower): each
 * page is one short query that starts after the last row of the previous one (no OFFSET, whose cost grows with the
 * rows skipped; no cursor or transaction held open between pages), and the memory is one page.
 *
 * Rebuilt: every field of the queue contract but `request` (the request's id, path, ip and user agent, for tracing,
 * are not stored). The body from its exact bytes (`raw_body_base64` when set, else `raw_body`), as the listener made
 * it; `event` is `event_json`, where a NUL or lone surrogate of a parsed field was stored as U+FFFD. A row stored
 * before migration 3 has no signature header: one queued `unchecked` (SIGNATURE_CHECK=worker), which the worker would
 * verify again, cannot be rebuilt and comes back as a `problem`.
 */
import pg from 'pg';
import { rawBodyFields, type WebhookJobData } from '../queue/contract.ts';
import { redactUrl } from '../redact.ts';
import type { ParseProblem, SellsyEvent } from '../sellsy/payload.ts';
import type { SignatureStatus, SignedScope } from '../sellsy/verify.ts';

/** The migration that added what is read here (the signature columns; the `stored_at` index only speeds the reads). */
const READ_VERSION = 3;

/** Rows a page holds at most, and the body bytes past which a page stops early (its first row always comes). */
const PAGE_ROWS = 500;
const PAGE_BYTES = 8 * 1024 * 1024;

export interface StoredDelivery {
  deliveryId: string;
  name: string;
  storedAt: Date;
  /** The job's data, or null when the row cannot be rebuilt (`problem` says why). */
  data: WebhookJobData | null;
  problem: string | null;
}

export interface StoredWindow {
  /** Unix ms, inclusive. */
  since: number;
  /** Unix ms, inclusive; null: up to now. */
  until: number | null;
  /** Only these delivery ids (none: all). */
  ids: ReadonlySet<string>;
}

export interface StoredDeliveries {
  /** The rows stored in the window, oldest first, one page at a time. */
  pages(window: StoredWindow, limits?: { rows?: number; bytes?: number }): AsyncGenerator<StoredDelivery[]>;
  close(): Promise<void>;
}

interface Row {
  delivery_id: string;
  job_name: string;
  account: string | null;
  received_at: Date;
  stored_at: Date;
  /** `stored_at` as PostgreSQL prints it: the keyset position to the microsecond (a Date keeps milliseconds). */
  stored_key: string;
  content_type: string | null;
  raw_body: string;
  raw_body_base64: string | null;
  event_json: SellsyEvent | null;
  parse_problem: ParseProblem | null;
  signature_status: SignatureStatus;
  signature_header: string | null;
  signature_scope: SignedScope | null;
  source: 'webhook' | 'reconcile';
  dedup_key: string;
}

/** As long as `replay` waits for Redis. */
const CONNECT_TIMEOUT_MS = 5000;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Connects to the store and checks its migrations; the caller closes it. */
export async function openStoredDeliveries(opts: { url: string; schema: string }): Promise<StoredDeliveries> {
  const client = new pg.Client({
    connectionString: opts.url,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: 'sellsy-webhooks replay',
  });
  // A server that goes away between pages fails the next query; unheard, the client's error event would crash.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw new Error(
      `the PostgreSQL store at ${redactUrl(opts.url, 'DATABASE_URL')} did not answer: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const schema = pg.escapeIdentifier(opts.schema);
  try {
    const migrations = await client.query<{ exists: boolean }>('SELECT to_regclass($1) IS NOT NULL AS exists', [
      `${schema}.sellsy_webhooks_migrations`,
    ]);
    const version =
      migrations.rows[0]?.exists === true
        ? Number((await client.query(`SELECT max(version) AS v FROM ${schema}.sellsy_webhooks_migrations`)).rows[0]?.v)
        : 0;
    if (version < READ_VERSION) {
      throw new Error(
        `the PostgreSQL store in schema ${opts.schema} is at migration ${version}, reading it needs ${READ_VERSION}: ` +
          'start a worker of this version once (it migrates the store at start)',
      );
    }
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return {
    async *pages(window, limits = {}) {
      let after: { key: string; id: string } | null = null;
      for (;;) {
        const rows = await page(client, schema, window, after, limits.rows ?? PAGE_ROWS, limits.bytes ?? PAGE_BYTES);
        if (rows.length === 0) return;
        yield rows.map(deliveryOf);
        const last = rows[rows.length - 1] as Row;
        after = { key: last.stored_key, id: last.delivery_id };
      }
    },
    close: () => client.end(),
  };
}

async function page(
  client: pg.Client,
  schema: string,
  window: StoredWindow,
  after: { key: string; id: string } | null,
  rows: number,
  bytes: number,
): Promise<Row[]> {
  const values: unknown[] = [new Date(window.since), rows, bytes];
  const where = ['stored_at >= $1'];
  if (window.until !== null) where.push(`stored_at <= $${values.push(new Date(window.until))}`);
  if (window.ids.size > 0) {
    // Not a UUID: not a delivery id (and a cast error for the uuid column).
    const ids = [...window.ids].filter((id) => UUID.test(id));
    where.push(`delivery_id = ANY($${values.push(ids)}::uuid[])`);
  }
  if (after !== null) {
    where.push(`(stored_at, delivery_id) > ($${values.push(after.key)}::timestamptz, $${values.push(after.id)}::uuid)`);
  }
  // The running sum stops a page of large bodies early; the inner LIMIT keeps the rows it looks at to one page.
  const size = 'octet_length(raw_body) + coalesce(octet_length(raw_body_base64), 0)';
  const result = await client.query<Row>(
    `SELECT * FROM (
       SELECT delivery_id, job_name, account, received_at, stored_at, stored_at::text AS stored_key, content_type,
         raw_body, raw_body_base64, event_json, parse_problem, signature_status, signature_header, signature_scope,
         source, dedup_key, sum(${size}) OVER (ORDER BY stored_at, delivery_id ROWS UNBOUNDED PRECEDING) - (${size})
           AS before
       FROM ${schema}.sellsy_events
       WHERE ${where.join(' AND ')}
       ORDER BY stored_at, delivery_id
       LIMIT $2
     ) p
     WHERE before < $3
     ORDER BY stored_at, delivery_id`,
    values,
  );
  return result.rows;
}

function deliveryOf(row: Row): StoredDelivery {
  const head = { deliveryId: row.delivery_id, name: row.job_name, storedAt: row.stored_at };
  if (row.signature_status === 'unchecked' && row.signature_header === null) {
    return {
      ...head,
      data: null,
      problem: 'stored unchecked before its signature header was kept (migration 3): a worker cannot verify it again',
    };
  }
  const body =
    row.raw_body_base64 !== null
      ? rawBodyFields(Buffer.from(row.raw_body_base64, 'base64'))
      : { rawBody: row.raw_body };
  const data: WebhookJobData = {
    v: 1,
    deliveryId: row.delivery_id,
    receivedAt: row.received_at.toISOString(),
    contentType: row.content_type,
    ...body,
    account: row.account,
    signature: { status: row.signature_status, header: row.signature_header, scope: row.signature_scope ?? 'body' },
    event: row.event_json,
    parseProblem: row.parse_problem,
    dedupKey: row.dedup_key,
    source: row.source,
  };
  return { ...head, data, problem: null };
}
