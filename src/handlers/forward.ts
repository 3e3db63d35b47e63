/**
 * Built-in `forward` handler: POSTs each delivery to an internal URL (`FORWARD_URL`), signed per Standard Webhooks
 * (https://www.standardwebhooks.com) with `FORWARD_SECRET`, so the receiver can use any Standard Webhooks library.
 *
 * The forward contract. Request: `POST <url>` with headers
 * - `content-type: application/json`, `user-agent: sellsy-webhooks`;
 * - `webhook-id`: the delivery id, the same on every retry (the receiver's idempotency key);
 * - `webhook-timestamp`: unix seconds at send time;
 * - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`; with two secrets (a
 *   rotation), one signature per secret, separated by a space, as Standard Webhooks allows (a receiver accepts the
 *   message when any one matches its secret);
 * - `x-sellsy-webhooks-source`: `webhook` (Sellsy posted it) or `reconcile` (a synthetic delivery, src/reconcile/);
 * and a JSON body:
 *   {
 *     "type": "<relatedtype>.<event>" | "unknown",   the job name
 *     "deliveryId": "<uuid>",                         same as webhook-id
 *     "receivedAt": "<ISO 8601>",                     when the listener received the Sellsy request
 *     "account": "<corpid>" | null,
 *     "event": { eventType, event, relatedType, … } | null,   the parsed Sellsy event (null for `unknown`)
 *     "object": { … } | null,                         the full object when `sellsy-fetch` ran earlier, else null
 *     "rawBody": "<the Sellsy body as received>",
 *     "rawBodyBase64": "<base64>",                    only when the body is not valid UTF-8: its exact bytes
 *     "contentType": "<the Sellsy request's Content-Type>" | null,
 *     "signature": "verified" | "unchecked" | "not_configured" | "internal"   the signature status (`internal`: a
 *                                                     synthetic delivery of reconciliation, nothing to verify)
 *   }
 *
 * Outcomes (see the handler API in `src/handlers/handler.ts`):
 * - 2xx: done;
 * - 408, 429, 5xx, network error, timeout (`timeoutMs`), worker shutdown: an ordinary Error, the job is retried with
 *   backoff;
 * - any other status (other 4xx; 3xx, as redirects are not followed: a signed POST must not be replayed elsewhere
 *   nor turned into a GET): `PermanentError`, the job becomes a dead letter; the message holds the status and the
 *   first 200 characters of the answer.
 * Messages and logs name the target as origin and path only (no query string), never the secret. A URL holding
 * credentials (`user:pass@`) is refused when the handler is created: fetch would refuse it on every request.
 */
import { createHmac } from 'node:crypto';
import { Agent, type Dispatcher, request } from 'undici';
import { PermanentError } from '../errors.ts';
import { shownUrl } from '../redact.ts';
import type { SellsyEvent } from '../sellsy/payload.ts';
import type { Handler, HandlerContext } from './handler.ts';

export interface ForwardOptions {
  /** Where to POST. */
  url: string;
  /** `whsec_` followed by the base64 of the key; during a rotation, the new and the old one (each signs). */
  secret: string | readonly string[];
  /**
   * Longest wait for each step of the exchange: connecting, then the answer's headers, then each part of its body;
   * past it the attempt fails and is retried.
   */
  timeoutMs: number;
}

const SECRET_PREFIX = 'whsec_';
const EXCERPT_CHARS = 200;
/** undici's codes for its connect, headers and body timeouts. */
const TIMEOUTS = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/**
 * The Standard Webhooks signature of one message: `v1,` + base64(HMAC-SHA256(key, `${id}.${timestamp}.${body}`)),
 * the key being the base64 after `whsec_`. Written on node:crypto rather than taking the `standardwebhooks` library
 * as a runtime dependency for four lines; the tests check it against that library (a devDependency).
 */
export function signStandardWebhook(secret: string, id: string, timestampSeconds: number, body: string): string {
  return signWithKey(decodeSecret(secret), id, timestampSeconds, body);
}

/**
 * undici's `request` on a connection pool of this target's own, rather than `fetch`: a fan-out makes one request per
 * destination and event, and fetch's WHATWG layers (streams, a Response, two AbortSignals per request for the
 * timeout) cost several times the CPU of the request itself (docs/benchmarks.md, destinations). The timeouts are
 * the pool's (connect, headers, body), so no timer nor signal is made per request.
 */
export function createForwardHandler(opts: ForwardOptions): Handler {
  const send = createForwardSender(opts);
  return (event, context) => send(forwardBodyOf(event, context), context);
}

/** Sends a forward body already made (`forwardBodyOf`): a fan-out makes it once for all its destinations. */
export type ForwardSender = (body: string, context: HandlerContext) => Promise<void>;

export function createForwardSender(opts: ForwardOptions): ForwardSender {
  // Decoded once, as the reference library does: a bad secret fails at start, not on every job.
  const keys = (typeof opts.secret === 'string' ? [opts.secret] : opts.secret).map(decodeSecret);
  if (keys.length === 0) throw new Error('forward: at least one secret is needed');
  const target = describeUrl(opts.url);
  const dispatcher = new Agent({
    connect: { timeout: opts.timeoutMs },
    headersTimeout: opts.timeoutMs,
    bodyTimeout: opts.timeoutMs,
  });
  return async (body, context) => {
    const timestamp = Math.floor(Date.now() / 1000);
    let res: Dispatcher.ResponseData;
    try {
      // undici's request follows no redirect: a signed POST must not be replayed elsewhere nor turned into a GET.
      res = await request(opts.url, {
        dispatcher,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'sellsy-webhooks',
          'webhook-id': context.deliveryId,
          'webhook-timestamp': String(timestamp),
          'webhook-signature': keys.map((key) => signWithKey(key, context.deliveryId, timestamp, body)).join(' '),
          'x-sellsy-webhooks-source': context.data.source ?? 'webhook',
        },
        body,
        signal: context.signal,
      });
    } catch (err) {
      if (context.signal.aborted) throw new Error(`forward to ${target} aborted: the worker is shutting down`);
      if (TIMEOUTS.has(codeOf(err) ?? '')) throw new Error(`forward to ${target} timed out after ${opts.timeoutMs} ms`);
      // Some errors quote the URL: keep only the part that is safe to log.
      throw new Error(`forward to ${target} failed: ${causeOf(err).replaceAll(opts.url, target)}`);
    }
    const status = res.statusCode;
    if (status >= 200 && status < 300) {
      // Nothing to read: dumped, the connection goes back to the pool once the body is in.
      discard(res);
      context.log.debug({ status, target }, 'forwarded');
      return;
    }
    if (status === 408 || status === 429 || status >= 500) {
      discard(res);
      throw new Error(`forward to ${target} answered ${status} (retryable)`);
    }
    const excerpt = await readExcerpt(res, EXCERPT_CHARS);
    throw new PermanentError(`forward to ${target} answered ${status}: ${excerpt}`);
  };
}

/** The forward contract's body (see the header) of an event, as sent. */
export function forwardBodyOf(event: SellsyEvent | null, context: HandlerContext): string {
  return JSON.stringify(forwardBody(event, context));
}

function forwardBody(event: SellsyEvent | null, context: HandlerContext) {
  const { data } = context;
  return {
    type: context.name,
    deliveryId: context.deliveryId,
    receivedAt: data.receivedAt,
    account: data.account,
    event,
    object: context.object ?? null,
    rawBody: data.rawBody,
    ...(data.rawBodyBase64 === undefined ? {} : { rawBodyBase64: data.rawBodyBase64 }),
    contentType: data.contentType,
    signature: data.signature.status,
  };
}

function decodeSecret(secret: string): Buffer {
  const key = Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64');
  // The message never repeats the value: it is a secret.
  if (key.length === 0) throw new Error('forward: the secret must be whsec_ followed by the base64 of a key');
  return key;
}

function signWithKey(key: Buffer, id: string, timestampSeconds: number, body: string): string {
  return `v1,${createHmac('sha256', key).update(`${id}.${timestampSeconds}.${body}`).digest('base64')}`;
}

/**
 * Origin and path: query strings often carry tokens, which must not reach logs. A URL with user info is refused
 * here, at start, since fetch refuses it on every request (and would quote it in the error).
 */
function describeUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error('forward: the URL is not a valid absolute URL');
  }
  const target = shownUrl(u);
  if (u.username !== '' || u.password !== '') {
    throw new Error(`forward: the URL ${target} must not hold credentials (fetch refuses them)`);
  }
  return target;
}

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** The useful part of a request error: its code (ECONNREFUSED…), else its cause's, else its message. */
function causeOf(err: unknown): string {
  const code = codeOf(err);
  if (code !== undefined && code !== 'UND_ERR_SOCKET') return code;
  const cause = (err as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
  if (typeof cause?.code === 'string') return cause.code;
  if (typeof cause?.message === 'string') return cause.message;
  return err instanceof Error ? err.message : String(err);
}

/** Past this many bytes an answer's body is not drained: its connection is closed instead of going back to the pool. */
const DUMP_LIMIT_BYTES = 4096;

/**
 * The body of an answer whose status decides: drained in the background, not awaited, so that a body sent slowly
 * (each part within the timeout) does not hold the job; a large one closes its connection.
 */
function discard(res: Dispatcher.ResponseData): void {
  res.body.dump({ limit: DUMP_LIMIT_BYTES }).catch(() => {});
}

/** The first `max` characters of the answer, reading no more than needed (an error page may be large). */
async function readExcerpt(res: Dispatcher.ResponseData, max: number): Promise<string> {
  const decoder = new TextDecoder();
  let text = '';
  try {
    for await (const chunk of res.body) {
      text += decoder.decode(chunk as Buffer, { stream: true });
      if (text.length >= max) break;
    }
  } catch {
    // The answer broke off or timed out mid-body: the status alone decides the outcome.
  } finally {
    res.body.destroy();
  }
  return text.slice(0, max);
}
