/**
 * Where each destination of `forward` stands, read from Redis without changing anything: its circuit breaker
 * (destination-breaker.ts) and the dead letters it still has to take. Read by `stats` and by the dashboard's
 * destinations page, so both say the same.
 *
 * Dead letters are counted from the most recent failed jobs of the ingest queue and of the record queue (at most
 * DEAD_LETTERS_READ of each, read as one pipeline per queue). A failed job counts for a destination when:
 * - its data names it as `onlyDestination` (a catch-up job of `replay --destination`, whatever it failed on);
 * - or, a fan-out job (no `onlyDestination`), its failed reason is `forward`'s and names the destination as still
 *   failing or refusing (`…: crm (…); …`); with a single destination every `forward` failure is its own.
 */
import type { Config } from '../config/config.ts';
import type { RedisClient } from './connection.ts';
import { RedisDestinationBreaker } from './destination-breaker.ts';
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

interface DeadLetter {
  reason: string;
  onlyDestination: string | null;
}

export async function destinationStatus(config: StatusConfig, client: RedisClient): Promise<DestinationStatus[]> {
  if (config.destinations.length === 0) return [];
  const names = config.destinations.map((d) => d.name);
  const base = `${config.queuePrefix}:${config.queueName}`;
  const states = await new RedisDestinationBreaker(client, base).states(names);
  const ingest = await deadLetters(client, base);
  const records = await deadLetters(client, `${config.queuePrefix}:${recordQueueName(config.queueName)}`);
  const letters = [...ingest.letters, ...records.letters];
  const capped = ingest.capped || records.capped;
  const single = names.length === 1;
  return names.map((name) => {
    // With several destinations the fan-out's reason lists them as `failing: a (…); b (…)` and
    // `refused for good: c (…)`; the tail `sent to d, e` has no parenthesis.
    const named = new RegExp(`(?:: |; )${name} \\(`);
    const count = letters.filter((l) =>
      l.onlyDestination !== null
        ? l.onlyDestination === name
        : l.reason.startsWith('[forward ') && (single || named.test(l.reason)),
    ).length;
    const state = states.get(name);
    return {
      name,
      breaker: state?.open ? 'open' : 'closed',
      failures: state?.failures ?? 0,
      nextProbeAt: state?.probeAt != null ? new Date(state.probeAt).toISOString() : null,
      deadLetters: count,
      deadLettersCapped: capped,
    };
  });
}

/** The failed reasons and catch-up targets of a queue's most recent dead letters (`base`: `<prefix>:<queue>`). */
async function deadLetters(client: RedisClient, base: string): Promise<{ letters: DeadLetter[]; capped: boolean }> {
  const ids = await client.zrevrange(`${base}:failed`, 0, DEAD_LETTERS_READ - 1);
  if (ids.length === 0) return { letters: [], capped: false };
  const capped = ids.length === DEAD_LETTERS_READ && (await client.zcard(`${base}:failed`)) > DEAD_LETTERS_READ;
  const pipeline = client.pipeline();
  for (const id of ids) pipeline.hmget(`${base}:${id}`, 'failedReason', 'data');
  const letters: DeadLetter[] = [];
  for (const [err, fields] of (await pipeline.exec()) ?? []) {
    const [reason, data] = (fields ?? []) as (string | null)[];
    if (err !== null || typeof reason !== 'string') continue;
    letters.push({ reason, onlyDestination: onlyDestinationOf(data ?? null) });
  }
  return { letters, capped };
}

function onlyDestinationOf(data: string | null): string | null {
  // Most dead letters are fan-out jobs: parsed only when the field is there at all.
  if (data === null || !data.includes('"onlyDestination"')) return null;
  try {
    const value = (JSON.parse(data) as { onlyDestination?: unknown }).onlyDestination;
    return typeof value === 'string' ? value : null;
  } catch {
    return null;
  }
}
