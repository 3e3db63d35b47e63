/**
 * Every environment variable the service reads, with its default. `.env.example` and docs/configuration.md list the
 * same set; a test checks that they agree.
 */
import { type Static, Type } from '@sinclair/typebox';

// Timers: at most 10 minutes (Node's timers overflow past 2^31 - 1 ms).
const Millis = (def: number, min = 1) => Type.Integer({ minimum: min, maximum: 600_000, default: def });

export const EnvSchema = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  HOST: Type.String({ minLength: 1, default: '0.0.0.0' }),
  REDIS_URL: Type.String({ pattern: '^rediss?://', default: 'redis://127.0.0.1:6379' }),
  REDIS_SENTINELS: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_SENTINEL_MASTER: Type.String({ minLength: 1, default: 'mymaster' }),
  REDIS_SENTINEL_USERNAME: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_SENTINEL_PASSWORD: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_SENTINEL_TLS: Type.Boolean({ default: false }),
  REDIS_CLUSTER_NODES: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_WAIT_REPLICAS: Type.Optional(Type.Integer({ minimum: 0, maximum: 100 })),
  QUEUE_NAME: Type.String({ pattern: '^[^:]+$', minLength: 1, default: 'sellsy-webhooks' }),
  // Default `bull`; `{bull}` with REDIS_CLUSTER_NODES (a hash tag: every key of a queue in one slot).
  QUEUE_PREFIX: Type.Optional(Type.String({ pattern: '^[^:]+$', minLength: 1 })),
  SELLSY_SIGN_KEY: Type.Optional(Type.String()),
  SELLSY_ACCOUNT_KEYS: Type.Optional(Type.String()),
  SIGNATURE_CHECK: Type.Union([Type.Literal('listener'), Type.Literal('worker')], { default: 'listener' }),
  SIGNATURE_FORM_SCOPE: Type.Union([Type.Literal('body'), Type.Literal('notif')], { default: 'body' }),
  BAD_SIGNATURE_KEEP_SECONDS: Type.Integer({ minimum: 0, maximum: 365 * 24 * 3600, default: 24 * 3600 }),
  BODY_LIMIT_BYTES: Type.Integer({ minimum: 1024, maximum: 64 * 1024 * 1024, default: 1024 * 1024 }),
  INFLIGHT_BYTES_LIMIT: Type.Optional(Type.Integer({ minimum: 1024, maximum: Number.MAX_SAFE_INTEGER })),
  DEDUP_WINDOW_SECONDS: Type.Integer({ minimum: 0, maximum: 365 * 24 * 3600, default: 72 * 3600 }),
  ENQUEUE_TIMEOUT_MS: Millis(1000),
  ACK_WRITE: Type.Union([Type.Literal('inbox'), Type.Literal('job')], { default: 'inbox' }),
  ENQUEUE_FAILURE_STATUS: Type.Union([Type.Literal(200), Type.Literal(503)], { default: 200 }),
  SPOOL_DIR: Type.String({ minLength: 1, default: './spool' }),
  SPOOL_MAX_BYTES: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, default: 1024 * 1024 * 1024 }),
  ACK_BUDGET_MS: Millis(10),
  REDIS_WAIT_AOF: Type.Boolean({ default: false }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info' },
  ),
  SHUTDOWN_TIMEOUT_MS: Millis(10_000),
  TRUST_PROXY: Type.Boolean({ default: false }),
  JOB_ATTEMPTS: Type.Integer({ minimum: 1, maximum: 1000, default: 8 }),
  JOB_BACKOFF_MS: Millis(1000),
  JOB_KEEP_COMPLETED_SECONDS: Type.Integer({ minimum: 0, maximum: 365 * 24 * 3600, default: 24 * 3600 }),
  JOB_KEEP_FAILED_SECONDS: Type.Integer({ minimum: 0, maximum: 365 * 24 * 3600, default: 30 * 24 * 3600 }),
  WORKER_CONCURRENCY: Type.Integer({ minimum: 1, maximum: 1000, default: 10 }),
  WORKER_LOCK_MS: Millis(30_000, 1000),
  HANDLERS: Type.Optional(Type.String({ minLength: 1 })),
  RECORD_ORDER: Type.Union([Type.Literal('auto'), Type.Literal('latest'), Type.Literal('off')], { default: 'auto' }),
  FORWARD_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  FORWARD_SECRET: Type.Optional(Type.String({ pattern: '^whsec_' })),
  FORWARD_TIMEOUT_MS: Millis(10_000),
  DESTINATIONS_FILE: Type.Optional(Type.String({ minLength: 1 })),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATABASE_SCHEMA: Type.String({ pattern: '^[a-z_][a-z0-9_]{0,62}$', default: 'public' }),
  SELLSY_CLIENT_ID: Type.Optional(Type.String({ minLength: 1 })),
  SELLSY_CLIENT_SECRET: Type.Optional(Type.String({ minLength: 1 })),
  SELLSY_ACCOUNT_ID: Type.Optional(Type.String({ minLength: 1 })),
  SELLSY_ACCOUNT_CREDENTIALS: Type.Optional(Type.String()),
  SELLSY_API_URL: Type.String({ pattern: '^https?://', default: 'https://api.sellsy.com/v2' }),
  SELLSY_TOKEN_URL: Type.String({ pattern: '^https?://', default: 'https://login.sellsy.com/oauth2/access-tokens' }),
  SELLSY_API_TIMEOUT_MS: Millis(10_000),
  RECONCILE_INTERVAL_SECONDS: Type.Integer({ minimum: 0, maximum: 7 * 24 * 3600, default: 0 }),
  RECONCILE_OVERLAP_SECONDS: Type.Integer({ minimum: 0, maximum: 7 * 24 * 3600, default: 300 }),
  RECONCILE_LOOKBACK_SECONDS: Type.Integer({ minimum: 0, maximum: 366 * 24 * 3600, default: 30 * 24 * 3600 }),
  RECONCILE_QUOTA_SHARE: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.5 }),
  METRICS_PORT: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
  ADMIN_USER: Type.Optional(Type.String({ minLength: 1 })),
  ADMIN_PASSWORD: Type.Optional(Type.String({ minLength: 12 })),
  ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 24 })),
  ADMIN_ALLOW_RETRIES: Type.Boolean({ default: false }),
});

export type Env = Static<typeof EnvSchema>;

export const ENV_NAMES = Object.keys(EnvSchema.properties) as (keyof Env)[];
