/**
 * `POST /webhook/sellsy[/<account>]`: one delivery in, one job out, then the answer.
 *
 * Answers: 200 `{"ok":true,"deliveryId","jobId","duplicate"}` once Redis holds the job, or with `"spooled":true` once
 * the local spool holds it (Redis down or slower than ACK_BUDGET_MS); 401 `{"ok":false,"error"}` on a missing or
 * wrong signature, a signed body holding bytes Sellsy never sends, or an account that is not an account id (nothing
 * queued); 413 over `BODY_LIMIT_BYTES`; when neither Redis nor the spool can take it,
 * `ENQUEUE_FAILURE_STATUS` (200 `{"ok":true,"queued":false}` or 503) and the raw delivery logged at error level.
 * Any body that passes the signature check is queued, parsed or not (`unknown` jobs).
 * `GET`/`HEAD` on the same paths answer 200 and do nothing (Sellsy or an operator probing the URL).
 */
import { isUtf8 } from 'node:buffer';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { EnqueueError, type HttpErrorCode, HttpErrors } from '../errors.ts';
import { clipped } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import {
  bindRawBody,
  dedupKeyOf,
  deriveBodyFieldsLazily,
  newDeliveryId,
  rawBodyFields,
  type WebhookJob,
  type WebhookJobData,
} from '../queue/contract.ts';
import type { Producer } from '../queue/writer.ts';
import { jobNameOf, parseDelivery } from '../sellsy/payload.ts';
import { SIGNATURE_HEADER } from '../sellsy/signature.ts';
import { accountOf, signedBytesOf, verifyDelivery } from '../sellsy/verify.ts';
import { WEBHOOK_PATH } from '../sellsy/webhooks.ts';
import { largeBodyBytes } from '../spool/spooling-producer.ts';
import { ByteGate } from './inflight.ts';

export interface WebhookDeps {
  config: Config;
  producer: Producer;
  /** Whether a spool stands behind the producer (`SPOOL_MAX_BYTES` > 0): only then do large bodies go to it first. */
  spooled: boolean;
  metrics: Metrics;
  logger: Logger;
}

interface Params {
  account?: string;
}

const EMPTY = Buffer.alloc(0);
const JSON_UTF8 = 'application/json; charset=utf-8';
const MEDIA_TYPE = /^\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*(;.*)?$/;
const originalContentType = new WeakMap<object, string>();

export async function webhookRoutes(app: FastifyInstance, deps: WebhookDeps): Promise<void> {
  const { config, producer, metrics, logger: log } = deps;

  // Keep the bytes exactly as sent, whatever the content type: the signature covers them, and a body we cannot
  // parse is still a delivery to keep.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.bodyLimitBytes }, (_req, body, done) => {
    done(null, body);
  });

  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413) {
      metrics.deliveries.inc({ outcome: 'too_large' });
      log.warn(
        { reqId: request.id, outcome: 'too_large', contentLength: clipped(request.headers['content-length']) },
        'delivery refused: body too large',
      );
      return sendError(reply, 'payload_too_large');
    }
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) log.error({ reqId: request.id, err }, 'webhook handler failed');
    return reply.code(status).send({ ok: false, error: err.code ?? 'internal_error', message: err.message });
  });

  const probe = async () => ({ ok: true });
  const inbox = config.ackWrite === 'inbox';
  // Without a spool every body goes to Redis, built whole.
  const largeBytes = deps.spooled ? largeBodyBytes(config.spool.ackBudgetMs) : Number.POSITIVE_INFINITY;
  const gate = config.inflightBytesLimit === null ? null : new ByteGate(config.inflightBytesLimit);
  const onRequest = gate === null ? [keepMalformedContentType] : [keepMalformedContentType, waitForBodyRoom];
  for (const url of [WEBHOOK_PATH, `${WEBHOOK_PATH}/:account`]) {
    app.get(url, { exposeHeadRoute: true }, probe);
    app.post<{ Params: Params }>(url, { onRequest }, handleDelivery);
  }

  /** INFLIGHT_BYTES_LIMIT: the body is read only once its bytes fit; they are given back when the answer is done. */
  async function waitForBodyRoom(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (gate === null) return;
    const declared = Number(request.headers['content-length']);
    const bytes =
      Number.isSafeInteger(declared) && declared >= 0
        ? Math.min(declared, config.bodyLimitBytes)
        : config.bodyLimitBytes;
    const release = await gate.acquire(bytes);
    // 'close' comes once the answer is sent, or the connection is gone (also while waiting: then release at once).
    if (reply.raw.closed || request.raw.destroyed) release();
    else reply.raw.once('close', release);
  }

  /**
   * A delivery refused for its signature or account: counted, logged, answered 401, nothing queued. What the request
   * claims (account, path) is logged clipped: nothing in it is authenticated.
   */
  function refuse(request: FastifyRequest, reply: FastifyReply, error: HttpErrorCode, account: string | null) {
    metrics.deliveries.inc({ outcome: 'bad_signature' });
    log.warn(
      {
        reqId: request.id,
        outcome: error,
        account: clipped(account),
        path: clipped(request.url),
        ackMs: reply.elapsedTime,
      },
      'delivery refused',
    );
    return sendError(reply, error);
  }

  /**
   * The job of a delivery that passed the checks, or the refusal. Synchronous and separate from `handleDelivery`:
   * the parse and the signed bytes (for a form body, the decoded `notif`, a string as large as the body) are gone
   * once it returns, instead of living in the request's frame while the delivery is made durable.
   */
  function jobOf(
    request: FastifyRequest<{ Params: Params }>,
    reply: FastifyReply,
    receivedAt: Date,
  ): { job: WebhookJob; logFields: Record<string, unknown> } | { refused: FastifyReply } {
    const raw = Buffer.isBuffer(request.body) ? request.body : EMPTY;
    const contentType = originalContentType.get(request.raw) ?? request.headers['content-type'];
    const parsed = parseDelivery(raw, contentType);
    const owner = accountOf(config, request.params.account, parsed.event?.corpId);
    if (!owner.ok) {
      return { refused: refuse(request, reply, owner.error, parsed.event?.corpId ?? request.params.account ?? null) };
    }
    const account = owner.account;
    const header = request.headers[SIGNATURE_HEADER];
    const signatureHeader = typeof header === 'string' ? header : undefined;
    const { bytes: signedBytes, scope } = signedBytesOf(raw, config.signature.formScope, () => parsed.notif);

    const verdict = verifyDelivery(config, account, signedBytes, signatureHeader);
    if (!verdict.ok) return { refused: refuse(request, reply, verdict.error, account) };

    const name = jobNameOf(parsed.event);
    const large = raw.length > largeBytes;
    const data: WebhookJobData = {
      v: 1,
      deliveryId: newDeliveryId(),
      receivedAt: receivedAt.toISOString(),
      contentType: contentType ?? null,
      // A large body's string and event are derived when read (see below); these are placeholders for key order.
      ...(large ? (isUtf8(raw) ? { rawBody: '' } : { rawBody: '', rawBodyBase64: '' }) : rawBodyFields(raw)),
      account,
      signature: { status: verdict.status, header: signatureHeader ?? null, scope },
      event: large ? null : parsed.event,
      parseProblem: parsed.problem,
      // Over what the signature covers: with SIGNATURE_FORM_SCOPE=notif, a signed notif re-sent with extra form
      // fields is the same delivery, not a new one.
      dedupKey: dedupKeyOf(account, signedBytes),
      request: {
        id: request.id,
        path: request.url,
        ip: request.ip,
        userAgent: request.headers['user-agent'] ?? null,
      },
      source: 'webhook',
    };
    // The spool then stores the body's bytes once instead of the job's JSON (see src/spool/format.ts). A large
    // body goes to the spool without being written to Redis: its string and event tree are built only if read.
    if (large) deriveBodyFieldsLazily(data, raw, () => parseDelivery(raw, contentType).event);
    else bindRawBody(data, raw);
    const logFields = {
      reqId: request.id,
      deliveryId: data.deliveryId,
      // Unauthenticated when no key is configured or with SIGNATURE_CHECK=worker.
      account: clipped(account),
      event: name,
      relatedId: clipped(parsed.event?.relatedId ?? null),
      parseProblem: parsed.problem ?? undefined,
    };
    return { job: { name, data }, logFields };
  }

  async function handleDelivery(request: FastifyRequest<{ Params: Params }>, reply: FastifyReply) {
    const prepared = jobOf(request, reply, new Date());
    if ('refused' in prepared) return prepared.refused;
    const { job, logFields } = prepared;
    const { name, data } = job;

    metrics.deliveriesWaiting.inc();
    try {
      const result = await producer.enqueue(job);
      const outcome = result.spooled ? 'spooled' : result.duplicate ? 'duplicate' : 'accepted';
      // ACK_WRITE=inbox: the job is made after the answer; whether it is a duplicate, and its id, are not known yet.
      const jobId = inbox ? undefined : result.jobId;
      metrics.deliveries.inc({ outcome });
      const ackMs = reply.elapsedTime;
      metrics.ackSeconds.observe(ackMs / 1000);
      if (result.spooled) {
        // A large delivery is spooled by design, not because Redis failed: not an enqueue error.
        const large = result.spoolReason === 'large';
        if (!large) metrics.enqueueErrors.inc({ reason: result.spoolReason ?? 'timeout' });
        log[large ? 'info' : 'warn']({ ...logFields, jobId, outcome, reason: result.spoolReason, ackMs }, 'delivery');
      } else {
        log.info({ ...logFields, jobId, outcome, ackMs }, 'delivery');
      }
      // Ids are UUIDs (no characters to escape): the answer is written as is, without a serializer.
      const known = jobId === undefined ? '' : `,"jobId":${JSON.stringify(jobId)},"duplicate":${result.duplicate}`;
      return reply
        .type(JSON_UTF8)
        .send(`{"ok":true,"deliveryId":"${data.deliveryId}"${known}${result.spooled ? ',"spooled":true' : ''}}`);
    } catch (err) {
      if (!(err instanceof EnqueueError)) throw err;
      metrics.enqueueErrors.inc({ reason: err.reason });
      const answer = config.enqueueFailureStatus;
      const outcome = answer === 200 ? 'lost' : 'refused';
      metrics.deliveries.inc({ outcome });
      // These answers took the longest (the whole ack budget, then the spool's failure): they count in the latency.
      metrics.ackSeconds.observe(reply.elapsedTime / 1000);
      // The full delivery goes to the log so that an operator can replay it by hand.
      log.error(
        { ...logFields, outcome, reason: err.reason, err: err.message, job: { name, data } },
        'delivery not queued',
      );
      if (answer === 503) return sendError(reply, 'enqueue_failed');
      return reply.send({ ok: true, deliveryId: data.deliveryId, queued: false });
    } finally {
      metrics.deliveriesWaiting.dec();
    }
  }
}

/**
 * A Content-Type that is not a media type at all (`json`, `text`) would be refused by Fastify (415) before the route
 * runs; such a body is still a delivery to keep. The header is kept for the job and the body read as bytes.
 */
function keepMalformedContentType(request: FastifyRequest, _reply: FastifyReply, done: () => void): void {
  const type = request.headers['content-type'];
  if (type !== undefined && !MEDIA_TYPE.test(type)) {
    originalContentType.set(request.raw, type);
    request.headers['content-type'] = 'application/octet-stream';
  }
  done();
}

function sendError(reply: FastifyReply, code: HttpErrorCode) {
  const { status, message } = HttpErrors[code];
  if (status === 503) reply.header('retry-after', '5');
  return reply.code(status).send({ ok: false, error: code, message });
}
