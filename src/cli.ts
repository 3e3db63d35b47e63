#!/usr/bin/env node
import { existsSync, readFileSync } from 'node:fs';
/**
 * `sellsy-webhooks <command>`: the services (listen, work, start) and the operator's commands (doctor, stats, replay,
 * spool, sellsy), which run once and exit. Exit codes: 0 done, 1 runtime failure (or a failed check), 2 usage error,
 * 78 bad configuration.
 */
import closeWithGrace from 'close-with-grace';
import { doctor } from './cli/doctor.ts';
import { startListener } from './cli/listener.ts';
import { parseReplayArgs, replay } from './cli/replay.ts';
import { parseConnectArgs, parseStatusArgs, sellsyConnect, sellsyStatus } from './cli/sellsy.ts';
import { spoolDrain, spoolStatus } from './cli/spool.ts';
import { stats } from './cli/stats.ts';
import { type Config, loadConfig } from './config/config.ts';
import { ConfigError, SpoolError, SpoolLockedError } from './errors.ts';
import { createLogger } from './logger.ts';
import { createMetrics } from './metrics/metrics.ts';
import { watchQueues } from './metrics/queue-stats.ts';
import { startMetricsServer } from './metrics/server.ts';
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
  doctor    checks configuration, Redis (reachable, version, eviction policy, AOF), the spool directory, the queue,
            PostgreSQL, the Sellsy API credentials and FORWARD_URL; ok/warn/fail with the fix; exit 1 on a fail
  stats [--json]
            one screen: jobs by state, throughput of the last 1/5/15 minutes, oldest waiting, dead letters, spool
  sellsy connect --url https://HOST/webhook/sellsy [--events client.created,invoice.*] [--name NAME] [--sign-key KEY]
            creates or updates (matched by endpoint) the webhook in Sellsy through API v2, JSON bodies, a fresh
            sign key (printed: put it in SELLSY_SIGN_KEY) unless --sign-key, all events unless --events
  sellsy status [--url URL]
            Sellsy's view of its webhooks: enabled, events, failures, last failure and success
  help      this text
  version   the package version

Configuration comes from environment variables; see .env.example and the README.
  listener: PORT HOST REDIS_URL QUEUE_NAME QUEUE_PREFIX SELLSY_SIGN_KEY SELLSY_ACCOUNT_KEYS SIGNATURE_CHECK
            SIGNATURE_FORM_SCOPE BODY_LIMIT_BYTES DEDUP_WINDOW_SECONDS ENQUEUE_TIMEOUT_MS ENQUEUE_FAILURE_STATUS
            TRUST_PROXY JOB_ATTEMPTS JOB_BACKOFF_MS JOB_KEEP_COMPLETED_SECONDS JOB_KEEP_FAILED_SECONDS SPOOL_DIR
            SPOOL_MAX_BYTES ACK_BUDGET_MS REDIS_WAIT_AOF INFLIGHT_BYTES_LIMIT
  spool:    SPOOL_DIR SPOOL_MAX_BYTES REDIS_URL QUEUE_NAME QUEUE_PREFIX ENQUEUE_TIMEOUT_MS
  replay, stats: REDIS_URL QUEUE_NAME QUEUE_PREFIX (stats: SPOOL_DIR)
  doctor:   every variable it checks (all of the above)
  sellsy:   SELLSY_CLIENT_ID SELLSY_CLIENT_SECRET SELLSY_API_URL SELLSY_TOKEN_URL SELLSY_API_TIMEOUT_MS
  worker:   REDIS_URL QUEUE_NAME QUEUE_PREFIX WORKER_CONCURRENCY WORKER_LOCK_MS HANDLERS RECORD_ORDER
            SELLSY_SIGN_KEY SELLSY_ACCOUNT_KEYS BAD_SIGNATURE_KEEP_SECONDS (SIGNATURE_CHECK=worker)
            forward: FORWARD_URL FORWARD_SECRET FORWARD_TIMEOUT_MS
            postgres: DATABASE_URL DATABASE_SCHEMA
            sellsy-fetch: SELLSY_CLIENT_ID SELLSY_CLIENT_SECRET SELLSY_API_URL SELLSY_TOKEN_URL SELLSY_API_TIMEOUT_MS
                          SELLSY_ACCOUNT_ID SELLSY_ACCOUNT_CREDENTIALS
  operations: METRICS_PORT ADMIN_USER ADMIN_PASSWORD ADMIN_TOKEN ADMIN_ALLOW_RETRIES
  all:      LOG_LEVEL SHUTDOWN_TIMEOUT_MS
`;

function version(): string {
  // dist/src/cli.js when built, src/cli.ts when run from the sources.
  for (const path of ['../../package.json', '../package.json']) {
    const url = new URL(path, import.meta.url);
    if (!existsSync(url)) continue;
    const pkg = JSON.parse(readFileSync(url, 'utf8')) as { name?: string; version: string };
    if (pkg.name === 'sellsy-webhooks') return pkg.version;
  }
  return 'unknown';
}

const out = (line: string) => process.stdout.write(`${line}\n`);
const err = (line: string) => process.stderr.write(`${line}\n`);

/**
 * The commands that run once and exit, with their arguments checked before the configuration is read: the command
 * to run, a usage error to print, or null (a service, or an unknown command).
 */
function oneShot(command: string, args: string[]): ((config: Config) => Promise<number>) | string | null {
  const json = args.includes('--json');
  /** A usage error when `rest` holds anything but the flags given. */
  const only = (rest: string[], ...flags: string[]) => {
    const extra = rest.find((a) => !flags.includes(a));
    return extra === undefined ? null : `unexpected argument ${JSON.stringify(extra)}`;
  };
  switch (command) {
    case 'doctor':
      return only(args) ?? ((config) => doctor(config, out, { color: process.stdout.isTTY === true }));
    case 'stats':
      return only(args, '--json') ?? ((config) => stats(config, out, { json }));
    case 'replay': {
      const parsed = parseReplayArgs(args);
      if (typeof parsed === 'string') return parsed;
      return async (config) => {
        try {
          const result = await replay(config, parsed.filter, parsed.dryRun, out);
          out(
            parsed.dryRun
              ? `${result.matched} dead letters would be replayed`
              : `${result.replayed} dead letters replayed${result.skipped > 0 ? `, ${result.skipped} skipped` : ''}`,
          );
          return 0;
        } catch (e) {
          err(`sellsy-webhooks replay: ${(e as Error).message}`);
          return 1;
        }
      };
    }
    case 'spool':
      if (args[0] === 'status') return only(args.slice(1), '--json') ?? ((config) => spoolStatus(config, json));
      if (args[0] === 'drain') return only(args.slice(1)) ?? ((config) => spoolDrain(config));
      return `unknown spool command "${args[0] ?? ''}": use "spool status" or "spool drain"`;
    case 'sellsy':
      if (args[0] === 'connect') {
        const parsed = parseConnectArgs(args.slice(1));
        if (typeof parsed === 'string') return parsed;
        return (config) => sellsyConnect(config, parsed, out, err);
      }
      if (args[0] === 'status') {
        const parsed = parseStatusArgs(args.slice(1));
        if (typeof parsed === 'string') return parsed;
        return (config) => sellsyStatus(config, parsed, out, err);
      }
      return `unknown sellsy command "${args[0] ?? ''}": use "sellsy connect" or "sellsy status"`;
    default:
      return null;
  }
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
  const once = oneShot(command, argv.slice(1));
  if (typeof once === 'string') {
    process.stderr.write(`sellsy-webhooks ${command}: ${once}\n`);
    process.exitCode = 2;
    return;
  }
  if (once === null && !['listen', 'work', 'start'].includes(command)) {
    process.stderr.write(`Unknown command "${command}".\n\n${HELP}`);
    process.exitCode = 2;
    return;
  }

  // A ConfigError ends the process with 78 (the catch at the end of this file).
  const config = loadConfig();
  if (once) {
    process.exitCode = await once(config);
    return;
  }
  const logger = createLogger(config.logLevel);
  const closers: (() => Promise<void>)[] = [];
  // One registry per process: in `start`, /metrics reports the listener, the worker and the queues. A `work`-only
  // process has metrics when METRICS_PORT gives it a port.
  const metrics = createMetrics({ listener: command !== 'work' });
  const servesMetrics = command !== 'work' || config.metricsPort !== null;
  if (servesMetrics) closers.push(watchQueues(metrics, config).close);
  if (command === 'listen' || command === 'start') closers.push((await startListener(config, logger, metrics)).close);
  if (command === 'work' || command === 'start') {
    const options = servesMetrics ? { registry: metrics.registry } : {};
    closers.push((await startWorker(config, logger, options)).close);
  }
  if (command === 'work' && !servesMetrics) {
    logger.info(
      'no METRICS_PORT: this worker exports no metrics (set METRICS_PORT to scrape its jobs and dead letters)',
    );
  }
  if (config.metricsPort !== null) {
    const server = await startMetricsServer(metrics, config.host, config.metricsPort);
    logger.info({ address: server.listeningOrigin }, 'metrics served on METRICS_PORT');
    closers.push(() => server.close());
  }

  closeWithGrace(
    {
      delay: config.shutdownTimeoutMs,
      logger: { error: (m: string) => logger.error(m) },
      // A fault is not a request to stop: an abort caught here (Node aborts on exit when its terminal is gone) would
      // restart the graceful close in a loop, on a dead terminal, using a core. These end the process as usual.
      skip: ['SIGILL', 'SIGTRAP', 'SIGABRT', 'SIGBUS', 'SIGFPE', 'SIGSEGV'],
    },
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
