/**
 * What a worker's job fails with: a handler's error led by the handler's name, a refused signature, a downstream's
 * "retry after" as a rate limit BullMQ takes.
 */
import { UnrecoverableError } from 'bullmq';
import { type HttpErrorCode, HttpErrors, PermanentError, PostponeError, RetryLaterError } from '../errors.ts';

/** A downstream's "retry after" as a rate-limit duration Redis accepts: whole ms, at least 1, at most an hour. */
export function rateLimitMs(delayMs: number): number {
  return Number.isFinite(delayMs) ? Math.min(Math.max(Math.ceil(delayMs), 1), 3_600_000) : 1000;
}

/**
 * The error a job fails with: the handler's error, its message led by the handler's name. A new error (the original
 * as `cause`), since some errors cannot be changed (a DOMException's message is read-only); permanent stays
 * permanent.
 */
export function attributed(err: unknown, label: string): unknown {
  if (err instanceof RetryLaterError || !(err instanceof Error || err instanceof DOMException)) return err;
  const message = `${label} ${err.message}`;
  if (err instanceof PostponeError) return new PostponeError(message, err.at, err.maxPauseMs);
  const permanent = err instanceof UnrecoverableError || err.name === 'UnrecoverableError';
  const out = permanent ? new PermanentError(message, { cause: err }) : new Error(message, { cause: err });
  out.stack = `${message}\n${err.stack?.split('\n').slice(1).join('\n') ?? ''}`;
  return out;
}

/** A job refused by the deferred signature check: a dead letter at once, kept `BAD_SIGNATURE_KEEP_SECONDS`. */
export class RefusedSignatureError extends PermanentError {
  constructor(readonly reason: HttpErrorCode) {
    super(`signature: ${reason}: ${HttpErrors[reason].message}`);
  }
}
