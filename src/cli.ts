#!/usr/bin/env node
import { readFileSync } from 'node:fs';
/**
 * `sellsy-webhooks <command>`: listen | work | start | replay | spool status | spool drain | help | version.
 * Exit codes: 0 done, 1 runtime failure, 2 usage error, 78 bad configuration.
 */
import closeWithGrace from 'close-with-grace';
import { startListener } from './cli/listener.ts';
import { parseReplayArgs, replay } from './cli/replay.ts';
import { spoolDrain, spoolStatus } from './cli/spool.ts';
import { type Config, loadConfig } from './config/config.ts';
import { ConfigError, SpoolError, SpoolLockedError } from './errors.ts';
import { createLogger } from './logger.ts';
import { createMetrics } from './metrics/metrics.ts';
import { startWorker } from './worker/worker.ts';

const HELP = `Usage: sellsy-webhooks <command>

Commands:
  start     listener and worker in one process (what \`npm start\` runs)
  listen    the HTTP listener only: POST /webhook/sellsy → BullMQ job
  work      the worker only: processes jobs from the queue
  spool status [--json]
            what the local spool in SPOOL_DIR holds: deliveries, size, oldest (safe while a listener runs)
  spool drain
            moves every spooled delivery into the queue once, then exits (no listener may run on SPOOL_DIR)
  replay [--id ID]... [--name PATTERN] [--since ISO-TIME] [--until ISO-TIME] [--dry-run]
            puts dead letters (failed jobs) back in the queue with fresh attempts; no filter = all of them;
            --name takes a pattern (invoice.*), --since/--until bound when they failed; --dry-run lists them
  help      this text
  version   the package version

Configuration comes from environment variables; see .env.example and the README.
  listener: PORT HOST REDIS_URL QUEUE_NAME QUEUE_PREFIX SELLSY_SIGN_KEY SELLSY_ACCOUNT_KEYS SIGNATURE_CHECK
            SIGNATURE_FORM_SCOPE BODY_LIMIT_BYTES DEDUP_WINDOW_SECONDS ENQUEUE_TIMEOUT_MS ENQUEUE_FAILURE_STATUS
            TRUST_PROXY JOB_ATTEMPTS JOB_BACKOFF_MS JOB_KEEP_COMPLETED_SECONDS JOB_KEEP_FAILED_SECONDS SPOOL_DIR
            SPOOL_MAX_BYTES ACK_BUDGET_MS REDIS_WAIT_AOF
  spool:    SPOOL_DIR SPOOL_MAX_BYTES REDIS_URL QUEUE_NAME QUEUE_PREFIX ENQUEUE_TIMEOUT_MS
  replay:   REDIS_URL QUEUE_NAME QUEUE_PREFIX
  worker:   REDIS_URL QUEUE_NAME QUEUE_PREFIX WORKER_CONCURRENCY WORKER_LOCK_MS HANDLERS RECORD_ORDER
            SELLSY_SIGN_KEY SELLSY_ACCOUNT_KEYS (SIGNATURE_CHECK=worker)
            forward: FORWARD_URL FORWARD_SECRET FORWARD_TIMEOUT_MS
            postgres: DATABASE_URL DATABASE_SCHEMA
            sellsy-fetch: SELLSY_CLIENT_ID SELLSY_CLIENT_SECRET SELLSY_API_URL SELLSY_TOKEN_URL SELLSY_API_TIMEOUT_MS
  operations: METRICS_PORT ADMIN_USER ADMIN_PASSWORD ADMIN_TOKEN ADMIN_ALLOW_RETRIES
  all:      LOG_LEVEL SHUTDOWN_TIMEOUT_MS
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<void> {
  const command = argv[0] ?? 'help';
  if (command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(HELP);
    return;
  }
  if (command === 'version' || command === '--version') {
    process.stdout.write(`${version()}\n`);
    return;
  }
  const spoolCommand = command === 'spool' ? argv[1] : undefined;
  if (command === 'spool' && spoolCommand !== 'status' && spoolCommand !== 'drain') {
    process.stderr.write(`Unknown spool command "${spoolCommand ?? ''}": use "spool status" or "spool drain".\n`);
    process.exitCode = 2;
    return;
  }
  const replayArgs = command === 'replay' ? parseReplayArgs(argv.slice(1)) : null;
  if (typeof replayArgs === 'string') {
    process.stderr.write(`sellsy-webhooks replay: ${replayArgs}\n`);
    process.exitCode = 2;
    return;
  }
  if (!['listen', 'work', 'start', 'spool', 'replay'].includes(command)) {
    process.stderr.write(`Unknown command "${command}".\n\n${HELP}`);
    process.exitCode = 2;
    return;
  }

  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`sellsy-webhooks: ${err.message}\n`);
      process.exitCode = 78;
      return;
    }
    throw err;
  }
  if (replayArgs) {
    try {
      const { matched, replayed, skipped } = await replay(config, replayArgs.filter, replayArgs.dryRun, (line) =>
        process.stdout.write(`${line}\n`),
      );
      process.stdout.write(
        replayArgs.dryRun
          ? `${matched} dead letters would be replayed\n`
          : `${replayed} dead letters replayed${skipped > 0 ? `, ${skipped} skipped` : ''}\n`,
      );
    } catch (err) {
      process.stderr.write(`sellsy-webhooks replay: ${(err as Error).message}\n`);
      process.exitCode = 1;
    }
    return;
  }
  if (spoolCommand === 'status') {
    process.exitCode = await spoolStatus(config, argv.includes('--json'));
    return;
  }
  if (spoolCommand === 'drain') {
    process.exitCode = await spoolDrain(config);
    return;
  }
  const logger = createLogger(config.logLevel);
  const closers: (() => Promise<void>)[] = [];
  // One registry: in `start`, GET /metrics also reports the worker. (`work` alone serves no HTTP.)
  const metrics = createMetrics();
  if (command === 'listen' || command === 'start') closers.push((await startListener(config, logger, metrics)).close);
  if (command === 'work' || command === 'start') {
    const options = command === 'start' ? { registry: metrics.registry } : {};
    closers.push((await startWorker(config, logger, options)).close);
  }

  closeWithGrace(
    { delay: config.shutdownTimeoutMs, logger: { error: (m: string) => logger.error(m) } },
    async ({ signal, err }) => {
      if (err) logger.error({ err }, 'closing after an unexpected error');
      else logger.info({ signal }, 'shutting down: finishing in-flight requests and jobs');
      // Together: each part has its own Redis connections, and the worker's hand-back of unfinished jobs must happen
      // within the same SHUTDOWN_TIMEOUT_MS as the listener's drain.
      await Promise.all(closers.map((close) => close()));
      logger.info('stopped');
    },
  );
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`sellsy-webhooks: ${err.message}\n`);
    process.exit(78);
  }
  if (err instanceof SpoolLockedError || err instanceof SpoolError) {
    process.stderr.write(`sellsy-webhooks: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`sellsy-webhooks: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
