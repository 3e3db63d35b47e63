/**
 * Where each destination of `forward` stands, read from Redis without changing anything: its circuit breaker
 * (destination-breaker.ts) and the dead letters it still has to take. Read by `stats` and by the dashboard's
 * destinations page, so both say the same.
 *
 * Dead letters are counted from the most recent failed jobs of the ingest queue and of the record queue (at most
 * DEAD_LETTERS_READ of each, read as one pipeline per queue), by the rules `replay --destination NAME` sends them by
 * (src/cli/replay-destination.ts; `sendsDeadLetter` is shared): each delivery once, when a failed job of it is for
 * every destination or for NAME alone (its retry job, a catch-up job), its event is one NAME takes, and the
 * destination ledger (destination-ledger.ts) does not say NAME took it (`sent`: a catch-up delivered it). So the count
 * is what that command would send now, and a dead letter caught up, or failed in several catch-up runs, is not counted
 * again. A fan-out job's failed reason is not read: a dead letter of the fan-out from before destinations had retry
 * jobs of their own names every destination still failing, and the ledger already says which ones took it.
 */
import type { Config, Destination } from '../config/config.ts';
import { takesEvent } from '../config/destinations.ts';
import type { RedisClient } from './connection.ts';
import type { WebhookJobData } from './contract.ts';
import { RedisDestinationBreaker } from './destination-breaker.ts';
import { entriesFor } from './destination-ledger.ts';
import { recordQueueName } from './records.ts';

export interface DestinationStatus {
  name: string;
  breaker: 'open' | 'closed';
  /** Consecutive failed requests counted by the breaker (across workers). */
  failures: number;
  /** While open: when the next probe may go (ISO 8601; in the past when the next request is the probe). */
  nextProbeAt: string | null;
  /** Dead letters this destination has still to take (see the header). */
  deadLetters: number;
  /** True when a queue held more dead letters than were read: `deadLetters` is then a lower bound. */
  deadLettersCapped: boolean;
}

export const DEAD_LETTERS_READ = 1000;

type StatusConfig = Pick<Config, 'destinations' | 'queuePrefix' | 'queueName'>;

/** What of a job decides whether it is a destination's dead letter. */
export interface DeadLetterJob {
  name: string;
  data?: Pick<WebhookJobData, 'deliveryId' | 'onlyDestination'> | undefined;
}

/**
 * Whether a failed job is one `replay --destination` sends to `destination` (the ledger aside): a job for every
 * destination, or one for that destination alone (its retry job, a catch-up job), whose event it takes.
 */
export function sendsDeadLetter(destination: Pick<Destination, 'name' | 'events'>, job: DeadLetterJob): boolean {
  const only = job.data?.onlyDestination;
  return (
    job.data?.deliveryId !== undefined &&
    (only === undefined || only === destination.name) &&
    takesEvent(destination, job.name)
  );
}

export async function destinationStatus(config: StatusConfig, client: RedisClient): Promise<DestinationStatus[]> {
  if (config.destinations.length === 0) return [];
  const names = config.destinations.map((d) => d.name);
  const base = `${config.queuePrefix}:${config.queueName}`;
  const [states, ingest, records] = await Promise.all([
    new RedisDestinationBreaker(client, base).states(names),
    deadLetters(client, base),
    deadLetters(client, `${config.queuePrefix}:${recordQueueName(config.queueName)}`),
  ]);
  const letters = [...ingest.letters, ...records.letters];
  const capped = ingest.capped || records.capped;
  // One pipelined ledger read per destination, for the deliveries it would be sent.
  const counts = await Promise.all(
    config.destinations.map(async (destination) => {
      const ids = [...new Set(letters.filter((l) => sendsDeadLetter(destination, l)).map((l) => l.data.deliveryId))];
      const entries = await entriesFor(client, base, ids, destination.name);
      return entries.filter((entry) => entry !== 'sent').length;
    }),
  );
  return names.map((name, i) => {
    const state = states.get(name);
    return {
      name,
      breaker: state?.open ? 'open' : 'closed',
      failures: state?.failures ?? 0,
      nextProbeAt: state?.probeAt != null ? new Date(state.probeAt).toISOString() : null,
      deadLetters: counts[i] ?? 0,
      deadLettersCapped: capped,
    };
  });
}

interface DeadLetter {
  name: string;
  data: Pick<WebhookJobData, 'deliveryId' | 'onlyDestination'>;
}

/** The names and delivery data of a queue's most recent dead letters (`base`: `<prefix>:<queue>`). */
async function deadLetters(client: RedisClient, base: string): Promise<{ letters: DeadLetter[]; capped: boolean }> {
  const ids = await client.zrevrange(`${base}:failed`, 0, DEAD_LETTERS_READ - 1);
  if (ids.length === 0) return { letters: [], capped: false };
  const capped = ids.length === DEAD_LETTERS_READ && (await client.zcard(`${base}:failed`)) > DEAD_LETTERS_READ;
  const pipeline = client.pipeline();
  for (const id of ids) pipeline.hmget(`${base}:${id}`, 'name', 'data');
  const letters: DeadLetter[] = [];
  for (const [err, fields] of (await pipeline.exec()) ?? []) {
    const [name, data] = (fields ?? []) as (string | null)[];
    // Gone meanwhile (removed, expired): not a dead letter any more.
    if (err !== null || typeof name !== 'string' || typeof data !== 'string') continue;
    const parsed = dataOf(data);
    if (parsed !== null) letters.push({ name, data: parsed });
  }
  return { letters, capped };
}

function dataOf(data: string): DeadLetter['data'] | null {
  try {
    const { deliveryId, onlyDestination } = JSON.parse(data) as { deliveryId?: unknown; onlyDestination?: unknown };
    if (typeof deliveryId !== 'string') return null;
    return typeof onlyDestination === 'string' ? { deliveryId, onlyDestination } : { deliveryId };
  } catch {
    return null;
  }
}
