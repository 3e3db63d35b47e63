/**
 * A worker's reload of `DESTINATIONS_FILE` (docs/destinations.md, "Reload"): asked by SIGUSR2 (src/cli.ts) or by
 * `sellsy-webhooks destinations reload`, which reaches every worker through Redis pub/sub
 * (src/queue/reload-channel.ts). Each reload is logged with its outcome and counted
 * (`sellsy_webhooks_destinations_reloads_total`); a refused file is logged at error level with every mistake.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { type DestinationSet, type ReloadOutcome, reloadFromFile } from '../handlers/destination-set.ts';
import type { DestinationMetrics } from '../metrics/metrics.ts';
import { listenForReloads, type ReloadListener } from '../queue/reload-channel.ts';

export interface DestinationsReload {
  /** Reads the file again and applies it or refuses it; null when the worker has no file to read. */
  reload(origin: string): ReloadOutcome | null;
  close(): void;
}

export function startDestinationsReload(
  config: Config,
  set: DestinationSet | null,
  env: NodeJS.ProcessEnv,
  log: Logger,
  metrics: DestinationMetrics | null,
): DestinationsReload {
  const file = config.destinationsFile;

  function reload(origin: string): ReloadOutcome | null {
    if (file === null || set === null) {
      log.warn(
        { origin },
        config.forward !== null
          ? 'destinations reload: this worker sends to FORWARD_URL, which is read at start only; nothing to reload'
          : 'destinations reload: this worker was started without DESTINATIONS_FILE; nothing to reload',
      );
      return null;
    }
    const outcome = reloadFromFile(set, file, env, config.forwardTimeoutMs);
    metrics?.reloaded(outcome.result);
    if (outcome.result === 'refused') {
      log.error(
        { origin, file, problems: outcome.problems },
        `destinations reload refused, the destinations in use are kept: ${outcome.problems.join('; ')}`,
      );
      return outcome;
    }
    metrics?.declare(outcome.added);
    metrics?.forget(outcome.removed);
    const { destinations, added, removed, changed } = outcome;
    log.info(
      { origin, file, destinations, added, removed, changed },
      'destinations reloaded: jobs that start from now on send to the new list, jobs in flight finish with the old one',
    );
    return outcome;
  }

  let listener: ReloadListener | null = null;
  if (file !== null && set !== null) {
    let lastError = '';
    listener = listenForReloads(
      config,
      (message) => {
        lastError = '';
        reload(`command${message ? ` (${message.slice(0, 200)})` : ''}`);
      },
      (err) => {
        // Each reconnection attempt reports the same error: once is enough (the workers' connections log too).
        if (err.message !== lastError)
          log.warn({ err: err.message }, 'destinations reload: listening connection error');
        lastError = err.message;
      },
    );
  }
  return { reload, close: () => listener?.close() };
}
