/**
 * The producer's write path against a real Redis: the deliveries of one event-loop turn leave in one socket write;
 * the write probe the drain asks before quarantining a record.
 */

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { loadConfig } from '../../src/config/config.ts';
import { BullmqProducer } from '../../src/queue/producer.ts';
import { producerOptionsFrom } from '../../src/queue/producer-options.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

const untilReady = (producer: BullmqProducer) =>
  waitFor(() => producer.health().ready, 10_000, 'the producer to be ready', 10);

/** A producer on a private Redis, ready, after one delivery alone (BullMQ's first add may load its script). */
async function startProducer(queueName: string) {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const producer = new BullmqProducer(
    producerOptionsFrom(loadConfig({ REDIS_URL: redis.url, QUEUE_NAME: queueName, PORT: '0' })),
  );
  cleanup.push(() => producer.close());
  await untilReady(producer);
  await producer.enqueue(jobFixture(999));
  const queue = new Queue(queueName, { connection: { url: redis.url } });
  cleanup.push(() => queue.close());
  return { producer, queue, redis };
}

test('the deliveries of one event-loop turn reach Redis in one socket write, and each gets its job', async () => {
  const { producer, queue } = await startProducer('turns');

  const stream = (producer.client as Redis).stream as unknown as Record<
    '_write' | '_writev',
    (...args: unknown[]) => void
  >;
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
  assert.equal((producer.client as Redis).stream.writableCorked, 0, 'the socket is left uncorked');

  assert.equal(await queue.count(), 21);
});

test('a connection lost in the middle of a corked turn fails that turn only; the next deliveries are queued', async () => {
  const { producer, queue } = await startProducer('lost-turn');

  const stream = (producer.client as Redis).stream;
  const turn = Array.from({ length: 5 }, (_, i) =>
    producer.enqueue(jobFixture(i)).then(
      () => 'queued',
      () => 'failed',
    ),
  );
  setImmediate(() => stream.destroy());
  assert.deepEqual(await Promise.all(turn), Array(5).fill('failed'));
  assert.equal(stream.writableCorked, 0, 'the lost socket was uncorked too');

  await untilReady(producer);
  const results = await Promise.all(Array.from({ length: 5 }, (_, i) => producer.enqueue(jobFixture(10 + i))));
  assert.equal(results.length, 5);
  assert.equal((producer.client as Redis).stream.writableCorked, 0);
  for (let i = 10; i < 15; i++) assert.ok(await queue.getJob(jobFixture(i).data.deliveryId), `delivery ${i} queued`);
});

test('the write probe: a connection lost under it is no answer (it asks again once reconnected); a Redis that refuses writes fails it', async () => {
  const { producer, redis } = await startProducer('probe');
  assert.equal(await producer.probeWrite(), true);

  // Redis drops the connection of a command it refuses; the probe can be sent before the close is seen.
  const stream = (producer.client as Redis).stream;
  const probed = producer.probeWrite();
  setImmediate(() => stream.destroy());
  assert.equal(await probed, true, 'answered on the new connection');

  const admin = redis.client();
  cleanup.push(async () => {
    admin.disconnect();
  });
  await admin.config('SET', 'min-replicas-to-write', '1');
  assert.equal(await producer.probeWrite(), false, 'NOREPLICAS: writes refused');
});
