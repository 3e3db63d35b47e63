/**
 * The producer's write path against a real Redis: the deliveries of one event-loop turn leave in one socket write.
 */

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import { loadConfig } from '../../src/config/config.ts';
import { BullmqProducer, producerOptionsFrom } from '../../src/queue/producer.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { startRedis } from '../helpers/redis-server.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

test('the deliveries of one event-loop turn reach Redis in one socket write, and each gets its job', async () => {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const config = loadConfig({ REDIS_URL: redis.url, QUEUE_NAME: 'turns', PORT: '0' });
  const producer = new BullmqProducer(producerOptionsFrom(config));
  cleanup.push(() => producer.close());
  while (!producer.health().ready) await new Promise((resolve) => setTimeout(resolve, 10));
  // One delivery alone first: BullMQ's first add of a connection may load its script.
  await producer.enqueue(jobFixture(999));

  const stream = producer.client.stream as unknown as Record<'_write' | '_writev', (...args: unknown[]) => void>;
  const calls = { write: 0, writev: 0, chunks: 0 };
  const write = stream._write.bind(stream);
  const writev = stream._writev.bind(stream);
  stream._write = (...args) => {
    calls.write++;
    write(...args);
  };
  stream._writev = (chunks, ...rest) => {
    calls.writev++;
    calls.chunks += (chunks as unknown[]).length;
    writev(chunks, ...rest);
  };

  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => producer.enqueue(jobFixture(i))));
  assert.deepEqual(
    results.map((r) => r.jobId),
    Array.from({ length: 20 }, (_, i) => jobFixture(i).data.deliveryId),
  );
  assert.deepEqual(calls, { write: 0, writev: 1, chunks: 20 }, 'twenty commands, one writev');

  const queue = new Queue('turns', { connection: { url: redis.url } });
  cleanup.push(() => queue.close());
  assert.equal(await queue.count(), 21);
});
