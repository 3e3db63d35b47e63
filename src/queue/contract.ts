/**
 * The queue contract: what every job on the ingest queue holds. Consumers written in any language rely on it;
 * change it only by adding fields, or with a new `v` and a migration note in the README.
 *
 * Queue: `QUEUE_NAME` (default `sellsy-webhooks`), key prefix `QUEUE_PREFIX` (default `bull`).
 * Job name: `<relatedtype>.<event>` (e.g. `invoice.step`), or `unknown` when the body is not a Sellsy event.
 * Job id: the delivery id (a UUID). Deduplication id: `dedupKey`.
 *
 * Two sources write jobs (`source`): the listener, one job per webhook delivery Sellsy posted, and reconciliation
 * (src/reconcile/), one synthetic delivery per change it found in the Sellsy API that no webhook brought: job name
 * `<relatedtype>.reconciled`, signature status `internal`, no `request`.
 */

import { isUtf8 } from 'node:buffer';
import { createHash, hash, randomUUID } from 'node:crypto';
import type { Config } from '../config/config.ts';
import type { HttpErrorCode } from '../errors.ts';
import { type ParseProblem, parseDelivery, type SellsyEvent } from '../sellsy/payload.ts';
import { accountOf, checkSignature, type SignatureStatus, type SignedScope, signedBytesOf } from '../sellsy/verify.ts';

/** Who made a job: a webhook delivery, or reconciliation's synthetic delivery. */
export type DeliverySource = 'webhook' | 'reconcile';

export interface WebhookJobData {
  /** Contract version. */
  v: 1;
  /** Unique per delivery; also the BullMQ job id of the job it created. */
  deliveryId: string;
  /** ISO 8601 time the listener received the request. */
  receivedAt: string;
  /** The request's Content-Type header, as sent (null when absent). */
  contentType: string | null;
  /** The body exactly as received, decoded as UTF-8. */
  rawBody: string;
  /** Present only when the body is not valid UTF-8: the exact bytes, base64 (then `rawBody` is lossy). */
  rawBodyBase64?: string;
  /** The Sellsy account: the payload's `corpid`, else the `/webhook/sellsy/<account>` path segment, else null. */
  account: string | null;
  signature: {
    status: SignatureStatus;
    /** The `X-Webhook-Signature` header as received (null when absent). */
    header: string | null;
    /** What the signature covers for form bodies: `body` (raw body) or `notif` (decoded notif value). */
    scope: SignedScope;
  };
  /** The parsed Sellsy event; null when the body could not be parsed (`parseProblem` says why). */
  event: SellsyEvent | null;
  parseProblem: ParseProblem | null;
  /** sha256 hex of account and the signed bytes (the raw body, or the `notif` value with
   * `SIGNATURE_FORM_SCOPE=notif`): the same delivery received twice has the same key. */
  dedupKey: string;
  /** Request metadata, for tracing; absent on a synthetic delivery (`source` `reconcile`), which had no request. */
  request?: { id: string; path: string; ip: string; userAgent: string | null };
  /** Who made the job; absent on jobs written before this field existed, which are all `webhook`. */
  source?: DeliverySource;
  /**
   * Set only on a catch-up job of `replay --destination NAME` (src/cli/replay-destination.ts): the delivery is sent
   * to this destination alone, by `forward` alone (no postgres, no user handler: they ran when it was delivered).
   */
  onlyDestination?: string;
  /**
   * Set, with `onlyDestination`, on the retry job a fan-out hands to a destination that failed
   * (src/queue/destination-retries.ts): skipped once the destination took the delivery; with `RECORD_ORDER=latest` it
   * sends the record's latest delivery.
   */
  destinationRetry?: true;
}

export interface WebhookJob {
  name: string;
  data: WebhookJobData;
}

/** Past this size a body is hashed in place (a Hash object) instead of being copied behind the account first. */
const ONE_SHOT_HASH_BYTES = 64 * 1024;

export function dedupKeyOf(account: string | null, bytes: Buffer | string): string {
  const prefix = `${account ?? ''}\n`;
  if (bytes.length > ONE_SHOT_HASH_BYTES) {
    return createHash('sha256').update(prefix, 'utf8').update(bytes).digest('hex');
  }
  // One-shot hashing: several times cheaper than a Hash object for bodies of a few hundred bytes.
  const body = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
  return hash('sha256', Buffer.concat([Buffer.from(prefix), body]), 'hex');
}

/**
 * The exact bytes each job's `rawBody` was decoded from, when the listener built the job from them (its `event` and
 * `parseProblem` are then `parseDelivery` of these bytes). The spool stores such jobs as the bytes themselves.
 */
const rawBodies = new WeakMap<object, Buffer>();

export function rawBodyFields(raw: Buffer): Pick<WebhookJobData, 'rawBody' | 'rawBodyBase64'> {
  const rawBody = raw.toString('utf8');
  return isUtf8(raw) ? { rawBody } : { rawBody, rawBodyBase64: raw.toString('base64') };
}

/**
 * Makes `data`'s `rawBody`, `rawBodyBase64` (when present) and `event` derived from `raw` on first read, instead of
 * held from the start: a large delivery that goes to the spool (which stores `raw` itself) never builds its body as
 * a string (two bytes a character when it is not ASCII) nor keeps its parsed event tree while its record is written.
 * Read (by JSON.stringify on the way to Redis), they are the values `rawBodyFields` and `parseDelivery` give, cached.
 * The properties keep their places in `data`'s key order. Also binds `raw` (`bindRawBody`).
 */
export function deriveBodyFieldsLazily(data: WebhookJobData, raw: Buffer, parseEvent: () => SellsyEvent | null): void {
  const lazy = <K extends keyof WebhookJobData>(key: K, compute: () => WebhookJobData[K]) => {
    let value: WebhookJobData[K] | undefined;
    let known = false;
    Object.defineProperty(data, key, {
      enumerable: true,
      configurable: true,
      get() {
        if (!known) {
          value = compute();
          known = true;
        }
        return value;
      },
      set(next: WebhookJobData[K]) {
        value = next;
        known = true;
      },
    });
  };
  lazy('rawBody', () => raw.toString('utf8'));
  if (Object.hasOwn(data, 'rawBodyBase64')) lazy('rawBodyBase64', () => raw.toString('base64'));
  lazy('event', parseEvent);
  bindRawBody(data, raw);
}

/** Records that `data` (its body fields, event and parse problem) was derived from `raw` by the listener. */
export function bindRawBody(data: WebhookJobData, raw: Buffer): void {
  rawBodies.set(data, raw);
}

/** The bytes `data` was built from by the listener, or undefined for a job built any other way. */
export function boundRawBody(data: WebhookJobData): Buffer | undefined {
  return rawBodies.get(data);
}

/** The exact bytes of a job's body, whatever its encoding. */
export function rawBytesOf(data: Pick<WebhookJobData, 'rawBody' | 'rawBodyBase64'>): Buffer {
  return data.rawBodyBase64 !== undefined
    ? Buffer.from(data.rawBodyBase64, 'base64')
    : Buffer.from(data.rawBody, 'utf8');
}

export const newDeliveryId = (): string => randomUUID();

/**
 * A job queued `unchecked` (`SIGNATURE_CHECK=worker`): the checks the listener left to its consumer (account,
 * signature, bytes), with the listener's own rules, or null when there is nothing to refuse.
 */
export function deferredRefusal(config: Config, data: WebhookJobData): HttpErrorCode | null {
  if (data.signature.status !== 'unchecked') return null;
  // The job's account is its corpid when the payload has one, else the URL's account segment.
  const corpId = data.event?.corpId ?? null;
  const owner = accountOf(config, corpId === null || corpId === '' ? data.account : null, corpId);
  if (!owner.ok) return owner.error;
  const raw = rawBytesOf(data);
  const signed = signedBytesOf(
    raw,
    data.signature.scope,
    () => parseDelivery(raw, data.contentType ?? undefined).notif,
  );
  const verdict = checkSignature(config, owner.account, signed.bytes, data.signature.header ?? undefined);
  return verdict.ok ? null : verdict.error;
}
