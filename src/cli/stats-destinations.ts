/**
 * The destinations part of `stats`: one line per destination, from what src/queue/destination-status.ts reads (the
 * dashboard's destinations page reads the same).
 */
import type { DestinationStatus } from '../queue/destination-status.ts';

export function destinationLines(list: readonly DestinationStatus[]): string[] {
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
