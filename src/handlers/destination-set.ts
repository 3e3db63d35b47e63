/**
 * The destinations `forward` sends to, swappable while the worker runs: a reload of `DESTINATIONS_FILE`
 * (docs/destinations.md, "Reload") reads and checks the whole file, then either swaps the list or refuses it and
 * keeps the old one.
 *
 * Each list has its own fan-out handler (src/handlers/destinations.ts): a job takes the list current when its
 * `forward` step starts and keeps it to the end, so a job in flight during a swap finishes as it began, and a job
 * that starts after it sends to the new list. The circuit breakers and the record of which destinations took an
 * event live in Redis under each destination's name, so they carry over a reload; the `max_per_second` pace of a
 * process starts afresh with the new list.
 */
import { type Destination, loadDestinations, takesEvent } from '../config/destinations.ts';
import { createFanOut, type FanOut, type FanOutOptions } from './destinations.ts';
import type { Handler } from './handler.ts';

export interface DestinationSet {
  /** The handler to register: it sends with the list current when it is called. */
  handler: Handler;
  /** `FanOut.prepare` of the current list: run before the chain of a job bound for one destination. */
  prepare: FanOut['prepare'];
  /** The destinations new jobs send to. */
  current(): readonly Destination[];
  /** Whether some current destination takes events of this job name (an `unknown` job needs one). */
  takes(jobName: string): boolean;
  /** Jobs that start from now on send to `destinations`. */
  swap(destinations: readonly Destination[]): void;
}

export function createDestinationSet(options: FanOutOptions): DestinationSet {
  const build = (destinations: readonly Destination[]) => ({
    destinations,
    fanOut: createFanOut({ ...options, destinations }),
  });
  let active = build(options.destinations);
  return {
    handler: (event, context) => active.fanOut.handler(event, context),
    prepare: (name, data, log) => active.fanOut.prepare(name, data, log),
    current: () => active.destinations,
    takes: (jobName) => active.destinations.some((d) => takesEvent(d, jobName)),
    swap(destinations) {
      // Built before it replaces the old one: a list the handler cannot take leaves the old one in place.
      active = build(destinations);
    },
  };
}

export type ReloadOutcome =
  | { result: 'ok'; destinations: string[]; added: string[]; removed: string[]; changed: string[] }
  | { result: 'refused'; problems: string[] };

/**
 * Reads `file` again with the secrets of `env` and applies it if every entry is right; a file with any mistake
 * (unreadable, not YAML, a bad entry, a secret variable not set) is refused whole, the list in use kept.
 */
export function reloadFromFile(
  set: DestinationSet,
  path: string,
  env: NodeJS.ProcessEnv,
  defaultTimeoutMs: number,
): ReloadOutcome {
  const problems: string[] = [];
  const next = loadDestinations(path, env, defaultTimeoutMs, problems);
  if (problems.length > 0) return { result: 'refused', problems };
  const before = new Map(set.current().map((d) => [d.name, d]));
  try {
    set.swap(next);
  } catch (err) {
    return { result: 'refused', problems: [(err as Error).message] };
  }
  const names = new Set(next.map((d) => d.name));
  return {
    result: 'ok',
    destinations: next.map((d) => d.name),
    added: next.filter((d) => !before.has(d.name)).map((d) => d.name),
    removed: [...before.keys()].filter((name) => !names.has(name)),
    changed: next
      .filter((d) => before.has(d.name) && JSON.stringify(before.get(d.name)) !== JSON.stringify(d))
      .map((d) => d.name),
  };
}
