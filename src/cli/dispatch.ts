/**
 * `sellsy-webhooks <command>`: the services (listen, work, start) and the operator's commands (doctor, stats, replay,
 * backfill, spool, sellsy, destinations), which run once and exit.
 *
 * `dispatch(argv, env, io)` runs one command line and returns its exit code: 0 done (or a service started), 1 runtime
 * failure (or a failed check), 2 usage error, 78 bad configuration. It never ends the process and reads neither
 * `process.argv` nor `process.env`: what it prints goes through `io`, and a started service is handed to `io.serve`,
 * which keeps it running until it is asked to stop (the bin, src/cli.ts, does that on a signal).
 */
import type { DestinationStream } from 'pino';
import { type Config, loadConfig } from '../config/config.ts';
import { ConfigError, SpoolError, SpoolLockedError } from '../errors.ts';
import { createLogger } from '../logger.ts';
import { createMetrics } from '../metrics/metrics.ts';
import { watchQueues } from '../metrics/queue-stats.ts';
import { startMetricsServer } from '../metrics/server.ts';
import { type RunningWorker, startWorker } from '../worker/worker.ts';
import { backfill, parseBackfillArgs } from './backfill.ts';
import { destinationsCheck, destinationsReload } from './destinations.ts';
import { doctor } from './doctor.ts';
import { HELP, version } from './help.ts';
import type { CliIo, Service } from './io.ts';
import { startListener } from './listener.ts';
import { parseReplayArgs, replay } from './replay.ts';
import { parseConnectArgs, parseStatusArgs, sellsyConnect, sellsyStatus } from './sellsy.ts';
import { spoolDrain, spoolStatus } from './spool.ts';
import { stats } from './stats.ts';

export type { CliIo, Service } from './io.ts';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_CONFIG = 78;

const SERVICES = ['listen', 'work', 'start'];

/**
 * The commands that run once and exit, with their arguments checked before the configuration is read: the command
 * to run, a usage error to print, or null (a service, or an unknown command).
 */
/** One-shot commands that run without a valid configuration (`destinations check` checks what it may refuse). */
const WITHOUT_CONFIG = new WeakSet<object>();

function oneShot(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  io: CliIo,
): ((config: Config) => Promise<number>) | string | null {
  const { out, err } = io;
  const json = args.includes('--json');
  /** A usage error when `rest` holds anything but the flags given. */
  const only = (rest: string[], ...flags: string[]) => {
    const extra = rest.find((a) => !flags.includes(a));
    return extra === undefined ? null : `unexpected argument ${JSON.stringify(extra)}`;
  };
  switch (command) {
    case 'doctor':
      return only(args) ?? ((config) => doctor(config, out, { color: io.isTTY }));
    case 'stats':
      return only(args, '--json') ?? ((config) => stats(config, out, { json }));
    case 'replay': {
      const parsed = parseReplayArgs(args);
      if (typeof parsed === 'string') return parsed;
      return async (config) => {
        try {
          const result = await replay(config, parsed.filter, parsed.dryRun, out);
          const skipped = result.skipped > 0 ? `, ${result.skipped} skipped` : '';
          const to = parsed.filter.destination;
          if (to) {
            out(
              parsed.dryRun
                ? `${result.matched} deliveries would be sent to ${to}`
                : `${result.replayed} deliveries queued for ${to}${skipped}`,
            );
          } else {
            out(
              parsed.dryRun
                ? `${result.matched} dead letters would be replayed`
                : `${result.replayed} dead letters replayed${skipped}`,
            );
          }
          return EXIT_OK;
        } catch (e) {
          err(`sellsy-webhooks replay: ${(e as Error).message}`);
          return EXIT_FAILURE;
        }
      };
    }
    case 'backfill': {
      const parsed = parseBackfillArgs(args);
      if (typeof parsed === 'string') return parsed;
      return (config) => backfill(config, parsed, io);
    }
    case 'spool':
      if (args[0] === 'status') return only(args.slice(1), '--json') ?? ((config) => spoolStatus(config, json, io));
      if (args[0] === 'drain') return only(args.slice(1)) ?? ((config) => spoolDrain(config, io));
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
    case 'destinations':
      if (args[0] === 'reload') return only(args.slice(1)) ?? ((config) => destinationsReload(config, io));
      if (args[0] === 'check') {
        const [file, ...rest] = args.slice(1);
        if (file?.startsWith('-')) return `unexpected argument ${JSON.stringify(file)}`;
        if (only(rest) !== null) return only(rest);
        const check = async () => destinationsCheck(file, env, io);
        WITHOUT_CONFIG.add(check);
        return check;
      }
      return `unknown destinations command "${args[0] ?? ''}": use "destinations check [FILE]" or "destinations reload"`;
    default:
      return null;
  }
}

/** Runs one command line (`argv` without the node and script paths); see the header. */
export async function dispatch(argv: readonly string[], env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  const command = argv[0] ?? 'help';
  if (command === 'help' || command === '--help' || command === '-h') {
    io.out(HELP.trimEnd());
    return EXIT_OK;
  }
  if (command === 'version' || command === '--version') {
    io.out(version());
    return EXIT_OK;
  }
  const once = oneShot(command, argv.slice(1), env, io);
  if (typeof once === 'string') {
    io.err(`sellsy-webhooks ${command}: ${once}`);
    return EXIT_USAGE;
  }
  if (once === null && !SERVICES.includes(command)) {
    io.err(`Unknown command "${command}".\n\n${HELP.trimEnd()}`);
    return EXIT_USAGE;
  }
  if (typeof once === 'function' && WITHOUT_CONFIG.has(once)) return await (once as () => Promise<number>)();
  try {
    const config = loadConfig(env);
    if (once) return await once(config);
    io.serve(await startServices(command, config, env, io.log));
    return EXIT_OK;
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`sellsy-webhooks: ${err.message}`);
      return EXIT_CONFIG;
    }
    if (err instanceof SpoolLockedError || err instanceof SpoolError) {
      io.err(`sellsy-webhooks: ${err.message}`);
      return EXIT_FAILURE;
    }
    io.err(`sellsy-webhooks: ${(err as Error)?.stack ?? String(err)}`);
    return EXIT_FAILURE;
  }
}

/** `listen`, `work` or `start`: the parts of the service, started; they run until `close`. */
async function startServices(
  command: string,
  config: Config,
  env: NodeJS.ProcessEnv,
  log?: DestinationStream,
): Promise<Service> {
  const logger = createLogger(config.logLevel, log);
  const closers: (() => Promise<void>)[] = [];
  // One registry per process: in `start`, /metrics reports the listener, the worker and the queues. A `work`-only
  // process has metrics when METRICS_PORT gives it a port.
  const metrics = createMetrics({ listener: command !== 'work' });
  const servesMetrics = command !== 'work' || config.metricsPort !== null;
  if (servesMetrics) closers.push(watchQueues(metrics, config).close);
  if (command === 'listen' || command === 'start') closers.push((await startListener(config, logger, metrics)).close);
  let worker: RunningWorker | null = null;
  if (command === 'work' || command === 'start') {
    const options = { env, ...(servesMetrics ? { registry: metrics.registry } : {}) };
    worker = await startWorker(config, logger, options);
    closers.push(worker.close);
  }
  if (command === 'work' && !servesMetrics) {
    logger.info(
      'no METRICS_PORT: this worker exports no metrics and serves no /healthz or /readyz (set METRICS_PORT for them)',
    );
  }
  if (config.metricsPort !== null) {
    // With a worker, its /readyz is here: a `work` process has no other port to probe.
    const running = worker;
    const probes = running ? { workerReady: () => running.ready() } : {};
    const server = await startMetricsServer(metrics, config.host, config.metricsPort, probes);
    logger.info({ address: server.listeningOrigin }, 'metrics served on METRICS_PORT');
    closers.push(() => server.close());
  }
  return {
    logger,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    ...(worker
      ? {
          reload: (origin: string) => {
            worker?.reloadDestinations(origin);
          },
        }
      : {}),
    // Together: each part has its own Redis connections, and the worker's hand-back of unfinished jobs must happen
    // within the same SHUTDOWN_TIMEOUT_MS as the listener's drain.
    close: async () => {
      await Promise.all(closers.map((close) => close()));
    },
  };
}
