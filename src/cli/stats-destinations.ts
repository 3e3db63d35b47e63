/**
 * The destinations part of `stats`: per destination, its circuit breaker (src/queue/destination-breaker.ts) and the
 * dead letters still failing there, counted from the failed reasons of the most recent dead letters of the ingest
 * queue (at most DEAD_LETTERS_READ, read as one pipeline of HGETs: the jobs' bodies are not loaded).
 */
import type { Config } from '../config/config.ts';
import type { RedisClient } from '../queue/connection.ts';
import { RedisDestinationBreaker } from '../queue/destination-breaker.ts';

export interface DestinationStats {
  name: string;
  breaker: 'open' | 'closed';
  /** Consecutive failed requests counted by the breaker (across workers). */
  failures: number;
  /** Dead letters whose failed reason names this destination as still failing or refusing. */
  deadLetters: number;
  /** True when the ingest queue held more dead letters than were read. */
  deadLettersCapped: boolean;
}

const DEAD_LETTERS_READ = 1000;

export async function destinationStats(config: Config, client: RedisClient): Promise<DestinationStats[]> {
  if (config.destinations.length === 0) return [];
  const base = `${config.queuePrefix}:${config.queueName}`;
  const names = config.destinations.map((d) => d.name);
  const states = await new RedisDestinationBreaker(client, base).states(names);
  const ids = await client.zrevrange(`${base}:failed`, 0, DEAD_LETTERS_READ - 1);
  const capped = ids.length === DEAD_LETTERS_READ && (await client.zcard(`${base}:failed`)) > DEAD_LETTERS_READ;
  const reasons: string[] = [];
  if (ids.length > 0) {
    const pipeline = client.pipeline();
    for (const id of ids) pipeline.hget(`${base}:${id}`, 'failedReason');
    for (const [err, reason] of (await pipeline.exec()) ?? []) {
      if (err === null && typeof reason === 'string') reasons.push(reason);
    }
  }
  const single = names.length === 1;
  return names.map((name) => {
    // With one destination every failure of `forward` is its; with several, a retry job's reason names its own
    // (`destination still failing: a (…)`, `destination refused the event: a (…)`), as older fan-out reasons
    // listed theirs (`failing: a (…); b (…)`).
    const named = new RegExp(`(?:: |; )${name} \\(`);
    const deadLetters = reasons.filter((r) =>
      single ? r.startsWith('[forward ') : r.startsWith('[forward ') && named.test(r),
    ).length;
    const state = states.get(name);
    return {
      name,
      breaker: state?.open ? 'open' : 'closed',
      failures: state?.failures ?? 0,
      deadLetters,
      deadLettersCapped: capped,
    };
  });
}

export function destinationLines(list: readonly DestinationStats[]): string[] {
  return list.map((d) => {
    const breaker =
      d.breaker === 'open'
        ? `breaker OPEN after ${d.failures} failures (paused, probing)`
        : `breaker closed${d.failures > 0 ? `, ${d.failures} failures in a row` : ''}`;
    const dead =
      d.deadLetters > 0
        ? `; ${d.deadLetters}${d.deadLettersCapped ? '+' : ''} dead letters still failing there (sellsy-webhooks replay --destination ${d.name})`
        : '; no dead letter';
    return `destination   ${d.name}: ${breaker}${dead}`;
  });
}
