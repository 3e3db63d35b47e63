/**
 * The handler chain of a worker, from the configuration: built-ins first, then the user module.
 *
 * Order: `postgres` (first, so a delivery is stored even when its object cannot be fetched), `sellsy-fetch` (sets
 * the object the later handlers see), `forward`, the user handlers. With `RECORD_ORDER=latest` (docs/architecture.md, "Per-record
 * order") the chain is split: `postgres` runs on every delivery, in the ingest job, and the rest on the record
 * queue, one job per record at a time, on the record's latest delivery.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Queue } from 'bullmq';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { ConfigError } from '../errors.ts';
import { createDestinationSet, type DestinationSet } from '../handlers/destination-set.ts';
import { type DestinationObserver, fanOutPatterns } from '../handlers/destinations.ts';
import type { Handler, HandlerMap, Registration } from '../handlers/handler.ts';
import { openEventStore } from '../handlers/postgres.ts';
import { createSellsyFetchHandler } from '../handlers/sellsy-fetch.ts';
import { closeForGood, createConnection, redisSettingsOf } from '../queue/connection.ts';
import { RedisDestinationBreaker } from '../queue/destination-breaker.ts';
import { RedisDestinationLedger } from '../queue/destination-ledger.ts';
import { QueueDestinationRetries } from '../queue/destination-retries.ts';
import { SellsyAccounts } from '../sellsy/api.ts';
import { isPattern } from '../sellsy/payload.ts';

export interface Pipeline {
  /** `sellsy-fetch`: sets `context.object` for the handlers after it. */
  fetch: readonly Registration[];
  /** `postgres`: one row per delivery, so it runs on every delivery, never on the record stage. */
  store: readonly Registration[];
  /** `forward`, then the user handlers. */
  handlers: readonly Registration[];
  /** What `forward` sends to (null: `forward` off); swapped by a reload of DESTINATIONS_FILE. */
  destinations: DestinationSet | null;
  /** The Sellsy API clients, by account, when sellsy-fetch is on (their counters feed the metrics). */
  sellsyApi: SellsyAccounts | null;
  close(): Promise<void>;
}

export interface PipelineOptions {
  /** Handlers given in code (tests, embedding) instead of, or beside, the `HANDLERS` module. */
  handlers?: HandlerMap;
  /** Told of each request to a destination (the worker's metrics). */
  destinationObserver?: DestinationObserver;
}

export async function buildPipeline(config: Config, log: Logger, options: PipelineOptions = {}): Promise<Pipeline> {
  const user: Registration[] = [];
  if (config.worker.handlersModule !== null) {
    user.push(...registrationsOf(await loadHandlerModule(config.worker.handlersModule), 'HANDLERS'));
  }
  if (options.handlers) user.push(...registrationsOf(options.handlers, 'handlers'));

  const closers: (() => Promise<void>)[] = [];
  const fetch: Registration[] = [];
  const store: Registration[] = [];
  const handlers: Registration[] = [];
  let sellsyApi: SellsyAccounts | null = null;
  let destinations: DestinationSet | null = null;
  try {
    if (config.postgres) {
      const poolSize = Math.min(config.worker.concurrency, 20);
      const events = await openEventStore({ ...config.postgres, poolSize }, log.child({ handler: 'postgres' }));
      closers.push(() => events.close());
      for (const pattern of ['*', 'unknown']) store.push({ pattern, handler: events.handler, source: 'postgres' });
    }
    if (config.sellsyFetch) {
      sellsyApi = SellsyAccounts.fromConfig({ ...config.sellsyFetch, single: config.sellsyApi });
      fetch.push({ pattern: '*', handler: createSellsyFetchHandler(sellsyApi), source: 'sellsy-fetch' });
    }
    if (config.destinations.length > 0) {
      let ledger: RedisDestinationLedger | null = null;
      let retries: QueueDestinationRetries | null = null;
      const client = createConnection(redisSettingsOf(config), {
        role: 'worker',
        name: `${config.queueName}:destinations`,
      });
      client.on('error', () => undefined); // reported by the workers' own connections
      closers.push(async () => closeForGood(client));
      const base = `${config.queuePrefix}:${config.queueName}`;
      // With a file, a reload may bring a second destination: the ledger is ready for it.
      if (config.destinations.length > 1 || config.destinationsFile !== null) {
        // Kept while the job may still be retried or replayed: its time as a dead letter, and a day for its retries.
        const ttlSeconds = config.jobs.keepFailedSeconds + 24 * 3600;
        ledger = new RedisDestinationLedger(client, base, ttlSeconds);
        // A destination's retry jobs go on the ingest queue, as the catch-up jobs of replay --destination do.
        const ingest = new Queue(config.queueName, { connection: client, prefix: config.queuePrefix });
        ingest.on('error', () => undefined); // reported by the workers' own connections
        closers.unshift(() => ingest.close());
        retries = new QueueDestinationRetries(ingest, client, config, config.worker.recordOrder === 'latest');
      }
      destinations = createDestinationSet({
        destinations: config.destinations,
        ledger,
        retries,
        breaker: new RedisDestinationBreaker(client, base),
        ...(options.destinationObserver ? { observer: options.destinationObserver } : {}),
      });
      // With a file, both patterns: a reload may add a destination taking `unknown` jobs, or the first taking the
      // others. The handler sends only to the destinations whose `events` match, and the worker asks the current
      // list whether an `unknown` job has a handler (src/worker/worker.ts).
      const patterns = config.destinationsFile !== null ? ['*', 'unknown'] : fanOutPatterns(config.destinations);
      for (const pattern of patterns) handlers.push({ pattern, handler: destinations.handler, source: 'forward' });
    }
  } catch (err) {
    for (const close of closers) await close();
    throw err;
  }
  handlers.push(...user);
  return {
    fetch,
    store,
    handlers,
    destinations,
    sellsyApi,
    async close() {
      for (const close of closers) await close();
    },
  };
}

/** Imports the user module; its `default` export or its `handlers` export is the handler map. */
export async function loadHandlerModule(path: string): Promise<HandlerMap> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(resolve(path)).href)) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError([`HANDLERS: cannot load ${JSON.stringify(path)}: ${(err as Error).message}`]);
  }
  const map = mod.default ?? mod.handlers;
  if (map === null || typeof map !== 'object') {
    throw new ConfigError([
      `HANDLERS: ${JSON.stringify(path)} must export (as default or as "handlers") an object mapping patterns such as "invoice.*" to async functions`,
    ]);
  }
  return map as HandlerMap;
}

/** Checks a handler map and lists its registrations in order; every mistake is named at start. */
export function registrationsOf(map: HandlerMap, origin: string): Registration[] {
  const problems: string[] = [];
  const out: Registration[] = [];
  for (const [pattern, value] of Object.entries(map)) {
    if (!isPattern(pattern)) {
      problems.push(
        `${origin}: ${JSON.stringify(pattern)} is not a pattern (use "invoice.step", "invoice.*", "*.deleted", "*" or "unknown")`,
      );
      continue;
    }
    const list = (Array.isArray(value) ? value : [value]) as unknown[];
    if (list.length === 0 || !list.every((h) => typeof h === 'function')) {
      problems.push(`${origin}: ${JSON.stringify(pattern)} must map to an async function or a list of them`);
      continue;
    }
    for (const handler of list) out.push({ pattern, handler: handler as Handler, source: 'user' });
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return out;
}
