/** What `sellsy-webhooks help` and `version` print. `test/cli/help.snapshot.txt` holds the help as released. */
import { existsSync, readFileSync } from 'node:fs';

export const HELP = `Usage: sellsy-webhooks <command>

Commands:
  start     listener and worker in one process (what \`npm start\` runs)
  listen    the HTTP listener only: POST /webhook/sellsy → BullMQ job
  work      the worker only: processes jobs from the queue
  spool status [--json]
            what the local spool in SPOOL_DIR holds: deliveries, size, oldest (safe while a listener runs)
  spool drain
            moves every spooled delivery into the queue once, then exits (no listener may run on SPOOL_DIR)
  replay [--destination NAME] [--id ID]... [--name PATTERN] [--since ISO-TIME] [--until ISO-TIME] [--dry-run]
            puts dead letters (failed jobs) back in the queue with fresh attempts; no filter = all of them;
            --name takes a pattern (invoice.*), --since/--until bound when they failed; --dry-run lists them
            --destination NAME sends to that destination only: its dead letters, and with --since the kept deliveries
  backfill --since TIME|DURATION [--until TIME|DURATION] [--types companies,contacts,...] [--lookback DURATION] [--dry-run]
            finds the Sellsy objects changed in the window that no webhook brought and queues one
            <relatedtype>.reconciled job per change (docs/reconciliation.md); safe to interrupt and run again
  doctor    checks configuration, Redis (reachable, version, eviction policy, AOF), the spool directory, the queue,
            PostgreSQL, the Sellsy API credentials and FORWARD_URL; ok/warn/fail with the fix; exit 1 on a fail
  stats [--json]
            one screen: jobs by state, throughput of the last 1/5/15 minutes, oldest waiting, dead letters, spool
  sellsy connect --url https://HOST/webhook/sellsy [--events client.created,invoice.*] [--name NAME] [--sign-key KEY]
            creates or updates (matched by endpoint) the webhook in Sellsy through API v2, JSON bodies, a fresh
            sign key (printed: put it in SELLSY_SIGN_KEY) unless --sign-key, all events unless --events
  sellsy status [--url URL]
            Sellsy's view of its webhooks: enabled, events, failures, last failure and success
  destinations check [FILE]
            reads a destinations file (default: DESTINATIONS_FILE) as a worker would, with this environment's secret
            variables, and lists its destinations or every mistake; exit 1 when a worker would refuse it
  destinations reload
            every worker started with DESTINATIONS_FILE reads it again (a bad file is refused, the old list kept);
            prints how many worker processes heard it; each logs its outcome. SIGUSR2 reloads one process
  help      this text
  version   the package version

Configuration comes from environment variables; see .env.example and the README.
  redis:    REDIS_URL REDIS_SENTINELS REDIS_SENTINEL_MASTER REDIS_SENTINEL_USERNAME REDIS_SENTINEL_PASSWORD
            REDIS_SENTINEL_TLS REDIS_CLUSTER_NODES REDIS_WAIT_REPLICAS (every command that talks to Redis)
  listener: PORT HOST REDIS_URL QUEUE_NAME QUEUE_PREFIX SELLSY_SIGN_KEY SELLSY_ACCOUNT_KEYS SIGNATURE_CHECK
            SIGNATURE_FORM_SCOPE BODY_LIMIT_BYTES DEDUP_WINDOW_SECONDS ENQUEUE_TIMEOUT_MS ENQUEUE_FAILURE_STATUS
            ACK_WRITE TRUST_PROXY JOB_ATTEMPTS JOB_BACKOFF_MS JOB_KEEP_COMPLETED_SECONDS JOB_KEEP_FAILED_SECONDS SPOOL_DIR
            SPOOL_MAX_BYTES ACK_BUDGET_MS REDIS_WAIT_AOF INFLIGHT_BYTES_LIMIT
  spool:    SPOOL_DIR SPOOL_MAX_BYTES REDIS_URL QUEUE_NAME QUEUE_PREFIX ENQUEUE_TIMEOUT_MS
  replay, stats: REDIS_URL QUEUE_NAME QUEUE_PREFIX (stats: SPOOL_DIR)
  destinations: check: DESTINATIONS_FILE FORWARD_TIMEOUT_MS and the secret variables; reload: REDIS_URL QUEUE_NAME
            QUEUE_PREFIX
  doctor:   every variable it checks (all of the above)
  sellsy:   SELLSY_CLIENT_ID SELLSY_CLIENT_SECRET SELLSY_API_URL SELLSY_TOKEN_URL SELLSY_API_TIMEOUT_MS
  backfill: the sellsy ones, SELLSY_ACCOUNT_ID SELLSY_ACCOUNT_CREDENTIALS, and REDIS_URL QUEUE_NAME QUEUE_PREFIX
            RECONCILE_QUOTA_SHARE
  worker:   REDIS_URL QUEUE_NAME QUEUE_PREFIX WORKER_CONCURRENCY WORKER_LOCK_MS HANDLERS RECORD_ORDER
            SELLSY_SIGN_KEY SELLSY_ACCOUNT_KEYS BAD_SIGNATURE_KEEP_SECONDS (SIGNATURE_CHECK=worker)
            forward: FORWARD_URL FORWARD_SECRET FORWARD_TIMEOUT_MS, or DESTINATIONS_FILE
            postgres: DATABASE_URL DATABASE_SCHEMA
            sellsy-fetch: SELLSY_CLIENT_ID SELLSY_CLIENT_SECRET SELLSY_API_URL SELLSY_TOKEN_URL SELLSY_API_TIMEOUT_MS
                          SELLSY_ACCOUNT_ID SELLSY_ACCOUNT_CREDENTIALS
            reconcile: RECONCILE_INTERVAL_SECONDS RECONCILE_OVERLAP_SECONDS RECONCILE_LOOKBACK_SECONDS
                       RECONCILE_QUOTA_SHARE (with the sellsy-fetch credentials)
  operations: METRICS_PORT ADMIN_USER ADMIN_PASSWORD ADMIN_TOKEN ADMIN_ALLOW_RETRIES
  all:      LOG_LEVEL SHUTDOWN_TIMEOUT_MS
`;

export function version(): string {
  // dist/src/cli/help.js when built, src/cli/help.ts when run from the sources.
  for (const path of ['../../../package.json', '../../package.json']) {
    const url = new URL(path, import.meta.url);
    if (!existsSync(url)) continue;
    const pkg = JSON.parse(readFileSync(url, 'utf8')) as { name?: string; version: string };
    if (pkg.name === 'sellsy-webhooks') return pkg.version;
  }
  return 'unknown';
}
