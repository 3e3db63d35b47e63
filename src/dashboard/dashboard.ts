/**
 * The admin dashboard: Bull Board at `/admin`, showing the ingest queue (`QUEUE_NAME`) and the record queue
 * (`QUEUE_NAME-records`). Registered only when credentials are configured (`config.admin`); otherwise `/admin` is
 * a plain 404.
 *
 * Access: every request under `/admin` (page, static assets, API, unknown paths) needs HTTP Basic credentials
 * (`ADMIN_USER`/`ADMIN_PASSWORD`) or `Authorization: Bearer <ADMIN_TOKEN>`, compared in constant time; anything
 * else is a 401 (`WWW-Authenticate: Basic realm="sellsy-webhooks"` when a login is configured, so a browser asks).
 * One hook of a few lines instead of @fastify/basic-auth plus @fastify/bearer-auth: either credential opens the
 * same routes, which two plugins (each answering 401 on its own) would need extra glue for.
 *
 * Guessing: `LOGIN_FAILURES_ALLOWED` wrong credentials from one client address (`request.ip`, so the proxy's own
 * address unless `TRUST_PROXY`) within `LOGIN_FAILURE_WINDOW_MS` close the dashboard to that address until the window
 * ends: `429 {"error":"too_many_failed_logins"}` with `Retry-After`, whatever credentials it sends meanwhile. Counted
 * by @fastify/rate-limit's store, in this process's memory; a request without credentials (a browser's first) and a
 * successful login are not counted.
 *
 * Framing: every answer under `/admin` says `Content-Security-Policy: frame-ancestors 'none'` and
 * `X-Frame-Options: DENY` (older browsers), so no other site can embed the dashboard and trick a logged-in operator
 * into clicking its buttons. An onSend hook rather than @fastify/helmet: these two headers are the whole need, and
 * helmet's default policy (scripts, styles, fonts) would have to be tuned to Bull Board's bundle and kept in step.
 *
 * Writes: read-only by default (Bull Board's `readOnlyMode`: every action answers 405). `ADMIN_ALLOW_RETRIES`
 * turns read-only off so that dead letters (failed jobs) can be retried, and only that: Bull Board itself would then
 * allow every action (empty, obliterate, add, edit, retrying completed jobs…), so any other write answers 405 here.
 * A dead letter of the record queue is not retried in place (it could then run beside a newer job of its record):
 * like `replay`, it is added again keyed on its record and the dead letter removed (`requeueRecordJob`).
 *
 * Destinations: `/admin/destinations` (and `/admin/api/destinations`, JSON) shows where each destination of `forward`
 * stands (destinations-page.ts), linked from the board's header menu.
 *
 * Redis: the dashboard has its own connection, never the producer's. A BullMQ queue waits for Redis to be ready
 * before its first command, so while the dashboard's connection is not ready its API answers 503 within
 * `READY_WAIT_MS` rather than holding the request; commands time out after `COMMAND_TIMEOUT_MS` (a frozen Redis). Closed with the app.
 */
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import rateLimit from '@fastify/rate-limit';
import { type Job, Queue } from 'bullmq';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { clipped } from '../logger.ts';
import { createConnection, redisSettingsOf } from '../queue/connection.ts';
import type { WebhookJobData } from '../queue/contract.ts';
import { recordQueueName, requeueRecordJob } from '../queue/records.ts';
import { credentialsCheck } from './credentials.ts';
import { DESTINATIONS_PAGE, destinationsPage } from './destinations-page.ts';

export interface AdminDeps {
  config: Config;
  logger: Logger;
  /** Where the destinations page reads DESTINATIONS_FILE's secret variables (destinations-page.ts). */
  env: NodeJS.ProcessEnv;
}

export const ADMIN_PREFIX = '/admin';
export const ADMIN_REALM = 'sellsy-webhooks';
const COMMAND_TIMEOUT_MS = 5000;
/** How long an API request waits for a dashboard connection that is not ready before its 503. */
const READY_WAIT_MS = 1000;
/** Wrong credentials one client address may send within `LOGIN_FAILURE_WINDOW_MS` before it gets 429s. */
export const LOGIN_FAILURES_ALLOWED = 10;
export const LOGIN_FAILURE_WINDOW_MS = 15 * 60_000;

const SAFE_METHODS = new Set(['GET', 'HEAD']);

/** The only writes `ADMIN_ALLOW_RETRIES` opens: retry one dead letter, retry every dead letter of a queue. */
const RETRY_JOB = `${ADMIN_PREFIX}/api/queues/:queueName/:jobId/retry`;
const RETRY_ALL = `${ADMIN_PREFIX}/api/queues/:queueName/retry/:queueStatus`;

export async function adminRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  await app.register(dashboard, { ...deps, prefix: ADMIN_PREFIX });
}

async function dashboard(app: FastifyInstance, { config, logger, env }: AdminDeps): Promise<void> {
  const admin = config.admin;
  if (!admin) return;
  const log = logger.child({ component: 'admin' });
  if (!config.trustProxy) {
    log.warn(
      'the admin dashboard is on and TRUST_PROXY is false: unless a TLS proxy is in front, its login or token ' +
        "travels in clear with every request, and the failed-login limit counts per connecting address (a proxy's " +
        'own, shared by every client). Serve /admin through a TLS reverse proxy and set TRUST_PROXY=true',
    );
  }
  const authorized = credentialsCheck(admin);
  const challenge = admin.password !== null ? `Basic realm="${ADMIN_REALM}"` : `Bearer realm="${ADMIN_REALM}"`;

  // Scoped to this plugin (global: false): it only counts what `failedLogins` is called for, nothing else of the app.
  await app.register(rateLimit, { global: false });
  const failedLogins = app.createRateLimit({ max: LOGIN_FAILURES_ALLOWED, timeWindow: LOGIN_FAILURE_WINDOW_MS });

  const client = createConnection(redisSettingsOf(config), {
    role: 'dashboard',
    name: `${config.queueName}:dashboard`,
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
  });
  let lastError = '';
  client.on('error', (err: Error) => {
    if (err.message !== lastError) log.warn({ err: err.message }, 'dashboard redis connection error');
    lastError = err.message;
  });
  client.on('ready', () => {
    lastError = '';
  });
  const recordQueue = recordQueueName(config.queueName);
  const queues = [
    { name: config.queueName, description: 'one job per delivery (the listener writes here)' },
    { name: recordQueue, description: 'one job per record at a time (RECORD_ORDER=latest)' },
  ].map(({ name, description }) => {
    const queue = new Queue<WebhookJobData>(name, { connection: client, prefix: config.queuePrefix });
    queue.on('error', () => undefined); // reported once by the connection
    return { queue, description };
  });
  const records = queues[1]?.queue as Queue<WebhookJobData>;
  // A request that comes while the connection is (re)connecting waits for it a moment, shared by all such requests.
  let waiting: Promise<boolean> | null = null;
  const redisReady = (): Promise<boolean> => {
    if (client.status === 'ready') return Promise.resolve(true);
    waiting ??= new Promise<boolean>((resolve) => {
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        client.off('ready', onReady);
        waiting = null;
        resolve(ok);
      };
      const onReady = () => finish(true);
      const timer = setTimeout(() => finish(false), READY_WAIT_MS);
      client.once('ready', onReady);
    });
    return waiting;
  };
  app.addHook('onClose', async () => {
    await Promise.all(queues.map(({ queue }) => queue.close()));
    client.disconnect();
  });

  app.addHook('onSend', async (_request, reply) => {
    reply.header('content-security-policy', "frame-ancestors 'none'").header('x-frame-options', 'DENY');
  });

  app.addHook('onRequest', async (request, reply) => {
    // Checked before the credentials: once closed to an address, even the right password gets the 429, so guessing
    // on learns nothing.
    const failures = await failedLogins(request, { increment: false });
    if (!failures.isAllowed && failures.remaining === 0) {
      return reply
        .code(429)
        .header('retry-after', failures.ttlInSeconds)
        .send({
          error: 'too_many_failed_logins',
          message: `too many failed logins from this address; retry in ${failures.ttlInSeconds} s`,
        });
    }
    const outcome = authorized(request.headers.authorization);
    if (outcome !== 'ok') {
      if (outcome === 'wrong') {
        const counted = await failedLogins(request);
        const closed = !counted.isAllowed && counted.remaining === 0;
        log.warn(
          { ip: request.ip, url: clipped(request.url), ...(closed ? { closedForSeconds: counted.ttlInSeconds } : {}) },
          closed
            ? 'dashboard: wrong credentials; too many, the address is refused for a while'
            : 'dashboard: wrong credentials',
        );
      }
      return reply
        .code(401)
        .header('www-authenticate', challenge)
        .send({ error: 'unauthorized', message: 'the dashboard needs the admin login or token' });
    }
    const route = request.routeOptions.url;
    if (route?.startsWith(`${ADMIN_PREFIX}/api/`)) {
      const write = !SAFE_METHODS.has(request.method);
      if (write && !(admin.allowRetries && (route === RETRY_JOB || route === RETRY_ALL))) {
        return refuse(reply, 405, 'ERRORS.QUEUE_READ_ONLY');
      }
      if (!(await redisReady())) return refuse(reply, 503, 'ERRORS.REDIS_UNAVAILABLE');
      // Bull Board also retries completed jobs (running handled deliveries again): only dead letters are retried here.
      const params = request.params as { queueName?: string; jobId?: string; queueStatus?: string };
      if (write && route === RETRY_ALL && params.queueStatus !== 'failed') {
        return refuse(reply, 405, 'ERRORS.ONLY_FAILED_JOBS_CAN_BE_RETRIED');
      }
      if (write && route === RETRY_JOB) {
        const queue = queues.find((q) => q.queue.name === params.queueName)?.queue;
        const state = queue && params.jobId ? await queue.getJobState(params.jobId) : 'unknown';
        if (state !== 'failed') return refuse(reply, 405, 'ERRORS.ONLY_FAILED_JOBS_CAN_BE_RETRIED');
      }
      // Bull Board would retry a record job in place: answered here the way `replay` does it instead.
      if (write && params.queueName === recordQueue) {
        if (route === RETRY_JOB) {
          const job = await records.getJob(params.jobId ?? '');
          try {
            if (!job) throw new Error('gone');
            await requeueRecordJob(config, records, job);
          } catch {
            // Left the failed set since the check above (retried, removed or expired).
            return refuse(reply, 405, 'ERRORS.ONLY_FAILED_JOBS_CAN_BE_RETRIED');
          }
          log.info({ queue: recordQueue, jobId: params.jobId }, 'dashboard: record dead letter added again');
          return reply.code(204).send();
        }
        const { retried, skipped } = await requeueAllRecordJobs(config, records);
        log.info({ queue: recordQueue, retried, skipped }, 'dashboard: record dead letters added again');
        return reply.code(200).send({ retried, skipped });
      }
    }
    return undefined;
  });
  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ error: 'not_found' }));
  destinationsPage(app, { config, env, client, redisReady });

  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(ADMIN_PREFIX);
  createBullBoard({
    queues: queues.map(
      ({ queue, description }) =>
        new BullMQAdapter(queue, {
          readOnlyMode: !admin.allowRetries,
          allowRetries: admin.allowRetries,
          description,
        }),
    ),
    serverAdapter,
    options: {
      uiConfig: {
        boardTitle: 'Sellsy webhooks',
        // In the board's header menu; only when there are destinations to show.
        ...(config.destinations.length > 0
          ? { miscLinks: [{ text: 'Destinations', url: `${ADMIN_PREFIX}${DESTINATIONS_PAGE}` }] }
          : {}),
      },
    },
  });
  await app.register(serverAdapter.registerPlugin());
}

/** Every dead letter of the record queue, added again keyed on its record; Bull Board's `{retried, skipped}`. */
async function requeueAllRecordJobs(
  config: Config,
  records: Queue<WebhookJobData>,
): Promise<{ retried: number; skipped: number }> {
  // Collected first: each requeued job leaves the failed set, which would shift the pages read by position.
  const failed: Job<WebhookJobData>[] = [];
  const total = await records.getFailedCount();
  for (let start = 0; start < total; start += 500) {
    const page = await records.getFailed(start, start + 499);
    failed.push(...page);
    if (page.length < 500) break;
  }
  let retried = 0;
  for (const job of failed) {
    try {
      await requeueRecordJob(config, records, job);
      retried++;
    } catch {
      // Left the failed set meanwhile (retried, removed or expired): counted as skipped, like Bull Board does.
    }
  }
  return { retried, skipped: failed.length - retried };
}

/** Bull Board's error shape (`{error: {key}}`), which its UI shows. */
function refuse(reply: FastifyReply, status: number, key: string): FastifyReply {
  return reply.code(status).send({ error: { key } });
}
