/**
 * How long after its receipt a delivery's BullMQ job existed, for the jobs of a fixed-rate window: the job's
 * `timestamp` (set when it was added, by the listener or, with ACK_WRITE=inbox, by its mover thread) minus the
 * delivery's `receivedAt`. Millisecond resolution; includes the acknowledgement itself, so it bounds the time from the
 * 200 to the job from above.
 */
import type { Redis } from 'ioredis';
import { type LatencySummary, summarize } from '../lib/stats.ts';

/** The lag of every job on the queue's wait list received at or after `sinceMs` (epoch ms). */
export async function moveLag(
  client: Redis,
  prefix: string,
  queueName: string,
  sinceMs: number,
): Promise<LatencySummary> {
  const ids = await client.lrange(`${prefix}:${queueName}:wait`, 0, -1);
  const lags: number[] = [];
  for (let i = 0; i < ids.length; i += 1000) {
    const batch = ids.slice(i, i + 1000);
    const pipeline = client.pipeline();
    for (const id of batch) pipeline.hmget(`${prefix}:${queueName}:${id}`, 'timestamp', 'data');
    for (const [err, fields] of (await pipeline.exec()) ?? []) {
      if (err) continue;
      const [timestamp, data] = fields as [string | null, string | null];
      const receivedAt = data === null ? null : /"receivedAt":"([^"]+)"/.exec(data)?.[1];
      if (timestamp === null || !receivedAt) continue;
      const received = Date.parse(receivedAt);
      if (received >= sinceMs) lags.push(Number(timestamp) - received);
    }
  }
  return summarize(Float64Array.from(lags));
}
