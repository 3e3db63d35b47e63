/**
 * `sellsy-webhooks destinations check [FILE]` and `destinations reload` (docs/destinations.md, "Reload").
 *
 * `check` reads a destinations file as a worker would, with this environment's secret variables, and prints the
 * destinations or every mistake: a file checked where the workers' environment is can be reloaded safely.
 * `reload` asks every worker process listening on the queue's reload channel to read its DESTINATIONS_FILE again;
 * each worker logs whether it applied or refused the file. It prints how many processes heard it (on a Cluster,
 * the listeners of every node, src/queue/reload-channel.ts).
 */
import { hostname } from 'node:os';
import { Value } from '@sinclair/typebox/value';
import type { Config } from '../config/config.ts';
import { loadDestinations } from '../config/destinations.ts';
import { EnvSchema } from '../config/schema.ts';
import { closeForGood, connectOrFail } from '../queue/connection.ts';
import { publishReload, reloadChannel } from '../queue/reload-channel.ts';
import { shownUrl } from '../redact.ts';
import type { CliIo } from './io.ts';

/**
 * Needs no valid configuration, only `env`: the file it checks may be the configured DESTINATIONS_FILE, which the
 * configuration refuses while it is wrong (that is when it is checked). FORWARD_TIMEOUT_MS gives the default
 * `timeout_ms` when it is a valid value, as at start; otherwise its default does.
 */
export function destinationsCheck(file: string | undefined, env: NodeJS.ProcessEnv, io: CliIo): number {
  const path = file ?? env.DESTINATIONS_FILE;
  if (path === undefined || path === '') {
    io.err('sellsy-webhooks destinations check: give a FILE, or set DESTINATIONS_FILE');
    return 2;
  }
  const problems: string[] = [];
  const destinations = loadDestinations(path, env, forwardTimeoutOf(env), problems);
  if (problems.length > 0) {
    io.err(`sellsy-webhooks destinations check: ${JSON.stringify(path)} would be refused:`);
    for (const problem of problems) io.err(`  - ${problem}`);
    return 1;
  }
  io.out(`${JSON.stringify(path)}: ${destinations.length} destination${destinations.length === 1 ? '' : 's'}, ok`);
  for (const d of destinations) {
    // The URL without its query string, which may hold a token; secrets are never shown.
    const limits = [
      `timeout ${d.timeoutMs} ms`,
      d.maxPerSecond === null ? null : `at most ${d.maxPerSecond}/s`,
      d.secrets.length > 1 ? 'two secrets (rotation)' : null,
    ].filter(Boolean);
    io.out(`  ${d.name}  ${shownUrl(d.url)}  events ${d.events.join(',')}  ${limits.join(', ')}`);
  }
  return 0;
}

/** FORWARD_TIMEOUT_MS when it passes its own schema (the one loadConfig checks it with), else its default. */
function forwardTimeoutOf(env: NodeJS.ProcessEnv): number {
  const field = EnvSchema.properties.FORWARD_TIMEOUT_MS;
  const value = Number(env.FORWARD_TIMEOUT_MS);
  return Value.Check(field, value) ? value : (field.default as number);
}

export async function destinationsReload(config: Config, io: CliIo): Promise<number> {
  let client: Awaited<ReturnType<typeof connectOrFail>>;
  try {
    client = await connectOrFail(config, 'destinations-reload');
  } catch (err) {
    io.err(`sellsy-webhooks destinations reload: ${(err as Error).message}`);
    return 1;
  }
  try {
    const heard = await publishReload(client, config, `from ${hostname()} pid ${process.pid}`);
    if (heard === 0) {
      io.err(
        `sellsy-webhooks destinations reload: no worker process listens on ${reloadChannel(config)}; only ` +
          'workers started with DESTINATIONS_FILE listen (and SIGUSR2 reloads one process)',
      );
      return 1;
    }
    io.out(
      `reload sent to ${heard} worker process${heard === 1 ? '' : 'es'}; each logs whether it applied ` +
        'the file or refused it (and kept its destinations)',
    );
    return 0;
  } catch (err) {
    io.err(`sellsy-webhooks destinations reload: ${(err as Error).message}`);
    return 1;
  } finally {
    closeForGood(client);
  }
}
