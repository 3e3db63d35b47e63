/**
 * Configuration: read once from the environment, validated, then frozen.
 * Every bad value is reported at once, each named with the variable, what it must be and what it was.
 */
import envSchema from 'env-schema';
import { ConfigError } from '../errors.ts';
import {
  DEFAULT_BREAKER_FAILURES,
  DEFAULT_BREAKER_MAX_PAUSE_SECONDS,
  DEFAULT_BREAKER_PROBE_SECONDS,
  DEFAULT_EVENTS,
  type Destination,
  loadDestinations,
  SECRET_HINT,
  secretProblem,
  urlProblem,
} from './destinations.ts';
import { hasHashTag, parseRedisTopology, type RedisTopology } from './redis.ts';
import { type Env, EnvSchema } from './schema.ts';
import { shown } from './shown.ts';

export type { Destination } from './destinations.ts';
export type { RedisAddress, RedisTopology } from './redis.ts';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  port: number;
  host: string;
  /** `REDIS_URL`: the standalone server, or the data nodes' credentials, database and TLS (`rediss://`). */
  redisUrl: string;
  /** Where Redis is: one server, a Sentinel group or a Cluster. */
  redis: RedisTopology;
  queueName: string;
  queuePrefix: string;
  signature: {
    /** `listener`: verified before the 200. `worker`: carried in the job, verified by the consumer. */
    check: 'listener' | 'worker';
    /** Form deliveries: the signature covers the raw body (`body`) or the decoded `notif` value (`notif`). */
    formScope: 'body' | 'notif';
    /** Keys for any account; several during a rotation. Empty: no verification. */
    keys: readonly string[];
    /** Per-account keys (Sellsy `corpid` or the `/webhook/sellsy/<account>` path segment). */
    accountKeys: ReadonlyMap<string, readonly string[]>;
    /** SIGNATURE_CHECK=worker: how long a job the worker refused for its signature stays a dead letter. */
    badSignatureKeepSeconds: number;
  };
  bodyLimitBytes: number;
  /** Bodies being read or handled at once, in bytes, past which the listener waits before reading more; null: no limit. */
  inflightBytesLimit: number | null;
  dedupWindowSeconds: number;
  enqueueTimeoutMs: number;
  enqueueFailureStatus: 200 | 503;
  /** What the 200 waits for: `inbox` (one RPUSH; the listener's mover thread makes the job) or `job` (BullMQ's add). */
  ackWrite: 'inbox' | 'job';
  /** Confirm a job only once Redis has fsynced it (WAITAOF). */
  redisWaitAof: boolean;
  /** `REDIS_WAIT_REPLICAS`: confirm a job only once this many replicas have it (WAIT); 0: the master's word. */
  redisWaitReplicas: number;
  spool: {
    dir: string;
    /** 0: no spool (a 200 then means Redis took the job; when it cannot, ENQUEUE_FAILURE_STATUS). */
    maxBytes: number;
    /** How long a delivery waits for Redis before it is spooled instead. */
    ackBudgetMs: number;
  };
  logLevel: LogLevel;
  shutdownTimeoutMs: number;
  trustProxy: boolean;
  jobs: { attempts: number; backoffMs: number; keepCompletedSeconds: number; keepFailedSeconds: number };
  worker: {
    concurrency: number;
    /** BullMQ lock duration: how long a crashed worker's job stays locked before another worker takes it again. */
    lockMs: number;
    /** Path of the user handler module, resolved from the working directory; null: built-ins only. */
    handlersModule: string | null;
    /** `latest`: one job per record at a time, bursts collapse into the latest (record stage); `off`: every
     * delivery runs the handlers, concurrently. */
    recordOrder: 'latest' | 'off';
  };
  /** `FORWARD_URL`: POST each event to an internal URL, signed per Standard Webhooks. Null: unset. */
  forward: { url: string; secret: string; timeoutMs: number } | null;
  /**
   * Where the built-in `forward` sends each event: the destinations of `DESTINATIONS_FILE`, or the one named
   * `default` that `FORWARD_URL` stands for. Empty: `forward` off.
   */
  destinations: readonly Destination[];
  /** `DESTINATIONS_FILE`, read again by a reload (docs/destinations.md, "Reload"); null: none, nothing to reload. */
  destinationsFile: string | null;
  /** `FORWARD_TIMEOUT_MS`: the timeout of a destination without `timeout_ms`, at start and at a reload. */
  forwardTimeoutMs: number;
  /** Built-in `postgres`: one row per delivery in `<schema>.sellsy_events`. Null: off. */
  postgres: { url: string; schema: string } | null;
  /** Built-in `sellsy-fetch`: the full object from the Sellsy API v2. Null: off. */
  sellsyApi: { clientId: string; clientSecret: string; apiUrl: string; tokenUrl: string; timeoutMs: number } | null;
  /**
   * Which API credentials fetch each account's records (`sellsy-fetch` is on when this is not null). `accountId`:
   * the account of the single `SELLSY_CLIENT_ID`/`SELLSY_CLIENT_SECRET` (null: they serve every account without its
   * own); `credentials`: `SELLSY_ACCOUNT_CREDENTIALS`, by account.
   */
  sellsyFetch: {
    accountId: string | null;
    credentials: ReadonlyMap<string, SellsyCredentials>;
    apiUrl: string;
    tokenUrl: string;
    timeoutMs: number;
  } | null;
  /**
   * Reconciliation (docs/reconciliation.md). `intervalSeconds`: the periodic reconcile run by workers (0: off);
   * `overlapSeconds`: how far before the cursor each run reads again; `lookbackSeconds`: how far back a rescan type is
   * read; `quotaShare`: the share of the per-minute quota left that a run (or a backfill) may spend.
   */
  reconcile: { intervalSeconds: number; overlapSeconds: number; lookbackSeconds: number; quotaShare: number };
  /** Where `GET /metrics` is served: null = on the listener's port; a port = there only (and for `work` too). */
  metricsPort: number | null;
  /** The Bull Board dashboard at `/admin`: null = off (no credentials configured). */
  admin: { user: string | null; password: string | null; token: string | null; allowRetries: boolean } | null;
}

export interface SellsyCredentials {
  clientId: string;
  clientSecret: string;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const input: Record<string, string> = {};
  for (const name of Object.keys(EnvSchema.properties)) {
    const value = env[name];
    // An empty variable (`PORT=`) means "not set", as in most shells' `.env` files.
    if (value !== undefined && value !== '') input[name] = value;
  }
  let parsed: Env;
  try {
    parsed = envSchema<Env>({ schema: structuredClone(EnvSchema), data: input, env: false });
  } catch (err) {
    const errors = (err as { errors?: AjvError[] }).errors;
    if (!errors) throw err;
    throw new ConfigError([...new Set(errors.map((e) => describe(e, input)))]);
  }
  const problems: string[] = [];
  const keys = splitKeys(parsed.SELLSY_SIGN_KEY);
  if (parsed.SELLSY_SIGN_KEY !== undefined && keys.length === 0) {
    problems.push(
      'SELLSY_SIGN_KEY: is set but holds no key (only commas and spaces); unset it to turn verification off',
    );
  }
  const accountKeys = parseAccountKeys(parsed.SELLSY_ACCOUNT_KEYS, problems);
  const redis = parseRedisTopology(parsed, problems);
  const clustered = parsed.REDIS_CLUSTER_NODES !== undefined;
  const queuePrefix = parsed.QUEUE_PREFIX ?? (clustered ? '{bull}' : 'bull');
  if (clustered && !hasHashTag(`${queuePrefix}:${parsed.QUEUE_NAME}:`)) {
    problems.push(
      `QUEUE_PREFIX: with REDIS_CLUSTER_NODES, the prefix or QUEUE_NAME must hold a hash tag such as {bull}, so ` +
        `that every key of a queue is in one hash slot (got ${shown('QUEUE_PREFIX', queuePrefix)})`,
    );
  }
  // The same checks as a destination's url and secret in DESTINATIONS_FILE: FORWARD_URL is its one-destination form.
  const forwardUrlProblem = parsed.FORWARD_URL === undefined ? null : urlProblem(parsed.FORWARD_URL);
  if (forwardUrlProblem !== null) problems.push(`FORWARD_URL: ${forwardUrlProblem}`);
  if (parsed.FORWARD_URL !== undefined && parsed.FORWARD_SECRET === undefined) {
    problems.push(`FORWARD_SECRET: is required when FORWARD_URL is set (${SECRET_HINT})`);
  }
  const forwardSecretProblem = parsed.FORWARD_SECRET === undefined ? null : secretProblem(parsed.FORWARD_SECRET);
  if (forwardSecretProblem !== null) problems.push(`FORWARD_SECRET: ${forwardSecretProblem}`);
  let destinations: Destination[] = [];
  if (parsed.DESTINATIONS_FILE !== undefined && parsed.FORWARD_URL !== undefined) {
    problems.push(
      'DESTINATIONS_FILE and FORWARD_URL: set one of them (FORWARD_URL is the one-destination shorthand; with a file, ' +
        'add it there as a destination and unset FORWARD_URL and FORWARD_SECRET)',
    );
  } else if (parsed.DESTINATIONS_FILE !== undefined) {
    destinations = loadDestinations(parsed.DESTINATIONS_FILE, env, parsed.FORWARD_TIMEOUT_MS, problems);
  }
  if ((parsed.SELLSY_CLIENT_ID === undefined) !== (parsed.SELLSY_CLIENT_SECRET === undefined)) {
    problems.push('SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET: set both (sellsy-fetch on) or neither (off)');
  }
  const credentials = parseAccountCredentials(parsed.SELLSY_ACCOUNT_CREDENTIALS, problems);
  const single = parsed.SELLSY_CLIENT_ID !== undefined && parsed.SELLSY_CLIENT_SECRET !== undefined;
  if (parsed.SELLSY_ACCOUNT_ID !== undefined && !single) {
    problems.push(
      'SELLSY_ACCOUNT_ID: names the account of SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET; set those too, or unset it',
    );
  }
  if ((single || credentials.size > 0) && accountKeys.size >= 2) {
    // Record ids are per account: one client answering for several accounts would fetch another account's record.
    const missing = [...accountKeys.keys()].filter(
      (a) => !credentials.has(a) && !(single && a === parsed.SELLSY_ACCOUNT_ID),
    );
    if (missing.length > 0) {
      problems.push(
        `SELLSY_ACCOUNT_CREDENTIALS: sellsy-fetch is on and SELLSY_ACCOUNT_KEYS names ${accountKeys.size} accounts; ` +
          `no API credentials for ${missing.map((a) => JSON.stringify(a)).join(', ')} (add them here, or name the ` +
          'account of SELLSY_CLIENT_ID with SELLSY_ACCOUNT_ID)',
      );
    }
  }
  if (parsed.SIGNATURE_CHECK === 'worker' && keys.length === 0 && accountKeys.size === 0) {
    problems.push(
      'SIGNATURE_CHECK: "worker" needs SELLSY_SIGN_KEY or SELLSY_ACCOUNT_KEYS (the worker verifies with them)',
    );
  }
  if (parsed.RECONCILE_INTERVAL_SECONDS > 0 && !single && credentials.size === 0) {
    problems.push(
      'RECONCILE_INTERVAL_SECONDS: the periodic reconcile reads the Sellsy API: set SELLSY_CLIENT_ID and ' +
        'SELLSY_CLIENT_SECRET with SELLSY_ACCOUNT_ID, or SELLSY_ACCOUNT_CREDENTIALS (or set it to 0)',
    );
  }
  if (
    parsed.RECONCILE_INTERVAL_SECONDS > 0 &&
    single &&
    parsed.SELLSY_ACCOUNT_ID === undefined &&
    credentials.size === 0
  ) {
    problems.push(
      'SELLSY_ACCOUNT_ID: the periodic reconcile (RECONCILE_INTERVAL_SECONDS) attributes the changes it finds to an ' +
        'account; set it to the Sellsy account id (corpid) of SELLSY_CLIENT_ID',
    );
  }
  if ((parsed.ADMIN_USER === undefined) !== (parsed.ADMIN_PASSWORD === undefined)) {
    problems.push('ADMIN_USER and ADMIN_PASSWORD: set both (dashboard with a login) or neither');
  }
  if (problems.length > 0 || redis === null) throw new ConfigError(problems);
  const forward =
    parsed.FORWARD_URL !== undefined && parsed.FORWARD_SECRET !== undefined
      ? { url: parsed.FORWARD_URL, secret: parsed.FORWARD_SECRET, timeoutMs: parsed.FORWARD_TIMEOUT_MS }
      : null;
  if (forward) {
    destinations = [
      {
        name: 'default',
        url: forward.url,
        secrets: [forward.secret],
        events: DEFAULT_EVENTS,
        timeoutMs: forward.timeoutMs,
        maxPerSecond: null,
        breakerFailures: DEFAULT_BREAKER_FAILURES,
        breakerProbeSeconds: DEFAULT_BREAKER_PROBE_SECONDS,
        breakerMaxPauseSeconds: DEFAULT_BREAKER_MAX_PAUSE_SECONDS,
      },
    ];
  }
  const sellsyApi =
    parsed.SELLSY_CLIENT_ID !== undefined && parsed.SELLSY_CLIENT_SECRET !== undefined
      ? {
          clientId: parsed.SELLSY_CLIENT_ID,
          clientSecret: parsed.SELLSY_CLIENT_SECRET,
          apiUrl: parsed.SELLSY_API_URL.replace(/\/+$/, ''),
          tokenUrl: parsed.SELLSY_TOKEN_URL,
          timeoutMs: parsed.SELLSY_API_TIMEOUT_MS,
        }
      : null;
  const sellsyFetch =
    sellsyApi !== null || credentials.size > 0
      ? {
          accountId: parsed.SELLSY_ACCOUNT_ID ?? null,
          credentials,
          apiUrl: parsed.SELLSY_API_URL.replace(/\/+$/, ''),
          tokenUrl: parsed.SELLSY_TOKEN_URL,
          timeoutMs: parsed.SELLSY_API_TIMEOUT_MS,
        }
      : null;

  return deepFreeze({
    port: parsed.PORT,
    host: parsed.HOST,
    redisUrl: parsed.REDIS_URL,
    redis,
    queueName: parsed.QUEUE_NAME,
    queuePrefix,
    signature: {
      check: parsed.SIGNATURE_CHECK,
      formScope: parsed.SIGNATURE_FORM_SCOPE,
      keys,
      accountKeys,
      badSignatureKeepSeconds: parsed.BAD_SIGNATURE_KEEP_SECONDS,
    },
    bodyLimitBytes: parsed.BODY_LIMIT_BYTES,
    inflightBytesLimit: parsed.INFLIGHT_BYTES_LIMIT ?? null,
    dedupWindowSeconds: parsed.DEDUP_WINDOW_SECONDS,
    enqueueTimeoutMs: parsed.ENQUEUE_TIMEOUT_MS,
    enqueueFailureStatus: parsed.ENQUEUE_FAILURE_STATUS,
    ackWrite: parsed.ACK_WRITE,
    redisWaitAof: parsed.REDIS_WAIT_AOF,
    redisWaitReplicas: parsed.REDIS_WAIT_REPLICAS ?? (redis.kind === 'sentinel' ? 1 : 0),
    spool: { dir: parsed.SPOOL_DIR, maxBytes: parsed.SPOOL_MAX_BYTES, ackBudgetMs: parsed.ACK_BUDGET_MS },
    logLevel: parsed.LOG_LEVEL as LogLevel,
    shutdownTimeoutMs: parsed.SHUTDOWN_TIMEOUT_MS,
    trustProxy: parsed.TRUST_PROXY,
    jobs: {
      attempts: parsed.JOB_ATTEMPTS,
      backoffMs: parsed.JOB_BACKOFF_MS,
      keepCompletedSeconds: parsed.JOB_KEEP_COMPLETED_SECONDS,
      keepFailedSeconds: parsed.JOB_KEEP_FAILED_SECONDS,
    },
    worker: {
      concurrency: parsed.WORKER_CONCURRENCY,
      lockMs: parsed.WORKER_LOCK_MS,
      handlersModule: parsed.HANDLERS ?? null,
      recordOrder: parsed.RECORD_ORDER === 'auto' ? (sellsyFetch ? 'latest' : 'off') : parsed.RECORD_ORDER,
    },
    forward,
    destinations,
    destinationsFile: parsed.DESTINATIONS_FILE ?? null,
    forwardTimeoutMs: parsed.FORWARD_TIMEOUT_MS,
    postgres: parsed.DATABASE_URL !== undefined ? { url: parsed.DATABASE_URL, schema: parsed.DATABASE_SCHEMA } : null,
    sellsyApi,
    sellsyFetch,
    reconcile: {
      intervalSeconds: parsed.RECONCILE_INTERVAL_SECONDS,
      overlapSeconds: parsed.RECONCILE_OVERLAP_SECONDS,
      lookbackSeconds: parsed.RECONCILE_LOOKBACK_SECONDS,
      quotaShare: parsed.RECONCILE_QUOTA_SHARE,
    },
    metricsPort: parsed.METRICS_PORT ?? null,
    admin:
      parsed.ADMIN_PASSWORD !== undefined || parsed.ADMIN_TOKEN !== undefined
        ? {
            user: parsed.ADMIN_USER ?? null,
            password: parsed.ADMIN_PASSWORD ?? null,
            token: parsed.ADMIN_TOKEN ?? null,
            allowRetries: parsed.ADMIN_ALLOW_RETRIES,
          }
        : null,
  });
}

/** Whether any signing key is configured (single keys or per-account keys). */
export function signatureEnabled(config: Config): boolean {
  return config.signature.keys.length > 0 || config.signature.accountKeys.size > 0;
}

interface AjvError {
  instancePath: string;
  message?: string;
  keyword: string;
  params: Record<string, unknown>;
}

function describe(error: AjvError, input: Record<string, string>): string {
  const name = error.instancePath.replace(/^\//, '');
  let message = error.message ?? 'is invalid';
  if (error.keyword === 'anyOf' || error.keyword === 'enum' || error.keyword === 'const') {
    const schema = (EnvSchema.properties as Record<string, { anyOf?: { const: unknown }[] }>)[name];
    const allowed = schema?.anyOf?.map((s) => String(s.const));
    if (allowed) message = `must be one of ${allowed.join(', ')}`;
  }
  const got = input[name];
  return `${name}: ${message}${got === undefined ? '' : ` (got ${shown(name, got)})`}`;
}

function splitKeys(value: string | undefined): string[] {
  if (value === undefined) return [];
  return value
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k.length > 0);
}

/** `SELLSY_ACCOUNT_KEYS` is a JSON object: `{"<corpid or path account>": "key" | ["new key", "old key"]}`. */
function parseAccountKeys(value: string | undefined, problems: string[]): Map<string, readonly string[]> {
  return parseAccountMap(
    'SELLSY_ACCOUNT_KEYS',
    value,
    '{"929":"key","138":["new key","old key"]}',
    problems,
    (keys) => {
      const list = typeof keys === 'string' ? [keys] : keys;
      return Array.isArray(list) && list.length > 0 && list.every((k) => typeof k === 'string' && k.length > 0)
        ? (list as string[])
        : 'needs a non-empty key or list of keys, as in {"929":"key","138":["new key","old key"]}';
    },
  );
}

/** `SELLSY_ACCOUNT_CREDENTIALS`: `{"<corpid>": {"clientId": "…", "clientSecret": "…"}}`. */
function parseAccountCredentials(value: string | undefined, problems: string[]): Map<string, SellsyCredentials> {
  return parseAccountMap(
    'SELLSY_ACCOUNT_CREDENTIALS',
    value,
    '{"929":{"clientId":"…","clientSecret":"…"}}',
    problems,
    (entry) => {
      const { clientId, clientSecret } = (entry ?? {}) as Record<string, unknown>;
      return typeof clientId === 'string' && clientId !== '' && typeof clientSecret === 'string' && clientSecret !== ''
        ? { clientId, clientSecret }
        : 'needs a non-empty "clientId" and "clientSecret"';
    },
  );
}

/**
 * A variable holding a JSON object keyed by account. `entryOf` turns one account's value into its entry, or returns
 * what is wrong with it; every problem is named with the variable (and the account), never with the value.
 */
function parseAccountMap<T>(
  name: string,
  value: string | undefined,
  example: string,
  problems: string[],
  entryOf: (value: unknown) => T | string,
): Map<string, T> {
  const map = new Map<string, T>();
  if (value === undefined) return map;
  const usage = `must be a JSON object such as ${example}`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    problems.push(`${name}: ${usage} (it is not valid JSON)`);
    return map;
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    problems.push(`${name}: ${usage}`);
    return map;
  }
  for (const [account, raw] of Object.entries(parsed)) {
    const entry = entryOf(raw);
    if (typeof entry === 'string') problems.push(`${name}: account ${JSON.stringify(account)} ${entry}`);
    else map.set(account, entry);
  }
  return map;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    if (!(value instanceof Map)) for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
