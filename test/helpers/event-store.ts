/** The `postgres` handler's tests: a store on a fresh schema, deliveries as the listener queues them, a TCP relay. */
import assert from 'node:assert/strict';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import type { Logger } from 'pino';
import type { HandlerContext } from '../../src/handlers/handler.ts';
import { type EventStore, openEventStore } from '../../src/handlers/postgres.ts';
import { createLogger } from '../../src/logger.ts';
import { dedupKeyOf, rawBodyFields, type WebhookJob } from '../../src/queue/contract.ts';
import { jobNameOf, parseDelivery } from '../../src/sellsy/payload.ts';
import { jobFixture } from './jobs.ts';
import { type TempSchema, tempSchema } from './postgres.ts';

export const silent = createLogger('silent');

/** A fresh schema and a store opened on it, both closed and dropped when the test ends. */
export async function withStore(t: TestContext, log: Logger = silent): Promise<{ db: TempSchema; store: EventStore }> {
  const db = await tempSchema();
  t.after(() => db.drop());
  const store = await openEventStore({ url: db.url, schema: db.schema }, log);
  t.after(() => store.close());
  return { db, store };
}

/** Delivery `i` as the listener would queue it: parsed, named and keyed from its bytes. */
export function delivery(i: number, body: string | Buffer, contentType = 'application/json'): WebhookJob {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const parsed = parseDelivery(bytes, contentType);
  const account = parsed.event?.corpId ?? null;
  const { data } = jobFixture(i);
  return {
    name: jobNameOf(parsed.event),
    data: {
      ...data,
      ...rawBodyFields(bytes),
      contentType,
      account,
      event: parsed.event,
      parseProblem: parsed.problem,
      dedupKey: dedupKeyOf(account, bytes),
    },
  };
}

export function contextOf(job: WebhookJob, extra: Partial<HandlerContext> = {}): HandlerContext {
  return {
    deliveryId: job.data.deliveryId,
    name: job.name,
    data: job.data,
    attempt: 1,
    attempts: 5,
    signal: new AbortController().signal,
    log: silent,
    ...extra,
  };
}

export async function store(s: EventStore, job: WebhookJob, extra: Partial<HandlerContext> = {}): Promise<void> {
  await s.handler(job.data.event, contextOf(job, extra));
}

export async function rows(db: TempSchema): Promise<Record<string, unknown>[]> {
  return db.query(`SELECT * FROM ${db.schema}.sellsy_events ORDER BY received_at, delivery_id`);
}

export async function only(db: TempSchema): Promise<Record<string, unknown>> {
  const all = await rows(db);
  assert.equal(all.length, 1, 'exactly one row');
  return all[0] as Record<string, unknown>;
}

/** A TCP relay to the test PostgreSQL that a test can cut, as a network failure would. */
export async function relay(target: string): Promise<{ url: string; cut(): Promise<void> }> {
  const to = new URL(target);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(to.port || 5432), to.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket
        .on('error', () => undefined)
        .on('close', () => {
          client.destroy();
          upstream.destroy();
        });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.toString(),
    cut: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
