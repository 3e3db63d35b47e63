/**
 * The handler API: what a user module (`HANDLERS=./handlers.js`) and the built-in handlers implement.
 *
 * A handler is `(event, context) => Promise<void>`, registered under a job-name pattern:
 * - `invoice.step`: exactly that job name (`<relatedtype>.<event>`);
 * - `invoice.*`: every event of one related type; `*.deleted`: one verb of every type;
 * - `*`: every parsed event;
 * - `unknown`: deliveries that are not Sellsy events (`event` is then null). `*` never matches them, so a handler
 *   written for events never receives a body it cannot read.
 *
 * Outcome of a handler:
 * - resolves: done for this delivery;
 * - throws `PermanentError` (or BullMQ's `UnrecoverableError`): cannot succeed by retrying; the job fails at once and
 *   stays in the dead-letter set;
 * - throws `RetryLaterError(ms)`: the downstream asked to slow down (HTTP 429); the job is put back without using an
 *   attempt and the queue pauses for `ms`, for every worker process (a rate limit kept in Redis);
 * - throws anything else: retried with exponential backoff and jitter, up to `JOB_ATTEMPTS` attempts.
 *
 * Handlers run one after the other in registration order (built-ins first: `postgres`, `sellsy-fetch`, `forward`;
 * then the user module), and a retry runs all of them again: each must be idempotent (`context.deliveryId` is a
 * stable key).
 */
import type { Logger } from 'pino';
import type { WebhookJobData } from '../queue/contract.ts';
import { matches, type SellsyEvent } from '../sellsy/payload.ts';

export { isPattern, matches } from '../sellsy/payload.ts';

export interface HandlerContext {
  /** The delivery id: the ingest job's id, stable across retries (an idempotency key). */
  readonly deliveryId: string;
  /** The job name, `<relatedtype>.<event>` or `unknown`. */
  readonly name: string;
  /** The whole queue-contract record of the delivery (raw body, content type, signature, account…). */
  readonly data: WebhookJobData;
  /** 1 on the first run, 2 on the first retry… */
  readonly attempt: number;
  /** How many attempts the job has in all. */
  readonly attempts: number;
  /** The full Sellsy object, when `sellsy-fetch` fetched it earlier in the chain; else undefined. */
  object?: unknown;
  /** Aborted when the worker is shutting down and the job will be handed back. */
  readonly signal: AbortSignal;
  readonly log: Logger;
}

export type Handler = (event: SellsyEvent | null, context: HandlerContext) => Promise<void>;

/** What a handler module exports (as `default` or as `handlers`): patterns mapped to one handler or a list. */
export type HandlerMap = Record<string, Handler | readonly Handler[]>;

/** Identity function that types a handler map: `export default defineHandlers({ 'invoice.*': async (e) => … })`. */
export function defineHandlers<T extends HandlerMap>(handlers: T): T {
  return handlers;
}

/** A named handler registered under a pattern; built-ins and user handlers alike. */
export interface Registration {
  pattern: string;
  handler: Handler;
  /** `sellsy-fetch`, `forward`, or `user` for the user module. */
  source: string;
}

/** The handlers that apply to a job name, in registration order. */
export function handlersFor(registrations: readonly Registration[], name: string): Registration[] {
  return registrations.filter((r) => matches(r.pattern, name));
}
