/**
 * Stable error codes. Tests and operators match on `code`, never on message text.
 * HTTP answers carry the lower-case `error` value; process-level errors carry the `SW_ERR_*` code.
 */
import { UnrecoverableError } from 'bullmq';

export const HttpErrors = {
  missing_signature: { status: 401, message: 'X-Webhook-Signature header is missing' },
  bad_signature: { status: 401, message: 'X-Webhook-Signature does not match any configured key' },
  unknown_account: { status: 401, message: 'no signing key is configured for this account' },
  account_mismatch: { status: 401, message: 'the account in the URL is not the corpid of the payload' },
  bad_account: {
    status: 401,
    message: 'the account is not a Sellsy account id (corpid: a decimal number; URL segment: [A-Za-z0-9_-]{1,64})',
  },
  forbidden_bytes: {
    status: 401,
    message: 'the signed bytes hold bytes Sellsy never sends (invalid UTF-8 or NUL), as a forged extension does',
  },
  payload_too_large: { status: 413, message: 'request body is larger than BODY_LIMIT_BYTES' },
  enqueue_failed: { status: 503, message: 'the event could not be written to the queue; retry later' },
} as const;

export type HttpErrorCode = keyof typeof HttpErrors;

export class ConfigError extends Error {
  readonly code = 'SW_ERR_CONFIG';
  constructor(readonly problems: readonly string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** The queue could not take a job now (Redis down, refusing, or slower than the deadline). */
export class EnqueueError extends Error {
  readonly code = 'SW_ERR_ENQUEUE';
  constructor(
    message: string,
    readonly reason:
      | 'not_connected'
      | 'timeout'
      /** Not sent to Redis at all: it had been silent for the whole ack budget (spool mode only). */
      | 'stalled'
      | 'backlog'
      | 'redis_error'
      /** Fewer replicas than `REDIS_WAIT_REPLICAS` confirmed the write in time, or its connection changed first. */
      | 'replicas'
      | 'spool_full'
      | 'spool_error',
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'EnqueueError';
  }
}

/** The spool could not make a delivery durable: `full` (SPOOL_MAX_BYTES reached), `io` (disk full, read-only, I/O
 * error), `lock_lost` (another process took the spool directory over: this one stops spooling for good), `closed`
 * (shutting down). */
export class SpoolError extends Error {
  readonly code = 'SW_ERR_SPOOL';
  constructor(
    message: string,
    readonly reason: 'full' | 'io' | 'lock_lost' | 'closed',
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'SpoolError';
  }
}

/** Another live process holds the spool directory. */
export class SpoolLockedError extends Error {
  readonly code = 'SW_ERR_SPOOL_LOCKED';
  constructor(message: string) {
    super(message);
    this.name = 'SpoolLockedError';
  }
}

/** The job cannot succeed however often it is retried: fail it now, keep it as a dead letter. */
export class PermanentError extends UnrecoverableError {
  readonly code = 'SW_ERR_PERMANENT';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message);
    this.name = 'PermanentError';
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/** A downstream asked to slow down: try again after `delayMs` without counting an attempt. */
export class RetryLaterError extends Error {
  readonly code = 'SW_ERR_RETRY_LATER';
  constructor(
    message: string,
    readonly delayMs: number,
  ) {
    super(message);
    this.name = 'RetryLaterError';
  }
}

/**
 * A handler asks for its job to wait until `at` (ms since the epoch) without spending an attempt: a destination's
 * circuit breaker is open and the next probe is not due. The worker postpones the job only while it is younger than
 * `maxPauseMs`; past that the job fails as any attempt does, so that no job is postponed for ever.
 */
export class PostponeError extends Error {
  readonly code = 'SW_ERR_POSTPONE';
  constructor(
    message: string,
    readonly at: number,
    readonly maxPauseMs: number,
  ) {
    super(message);
    this.name = 'PostponeError';
  }
}
