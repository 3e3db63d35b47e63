/**
 * ACK_WRITE=inbox (the default) with real `listen` processes: two listeners share one inbox; the one moving is killed
 * (kill -9) in the middle of a move; the other takes over, and every inbox entry and every delivery answered 200 is
 * exactly one job.
 */

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { encodeEntry, inboxKeys } from '../../src/queue/inbox.ts';
import { type CliProcess, httpOk, spawnCli } from '../helpers/cli.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { freePort, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

const MOVING = 'inbox mover: moving inbox entries into jobs';
const holds = (cli: CliProcess) => cli.stdout.some((line) => line.includes(MOVING));

test('two listeners, the moving one killed (kill -9) mid-move: the other takes over; one job per entry', async (t) => {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const client = new Redis(redis.url);
  cleanup.push(async () => void client.disconnect());
  const queueName = 'inbox-kill';
  const keys = inboxKeys('bull', queueName);

  // Entries waiting before any listener runs (as an outage of every listener's mover leaves them).
  const count = 20_000;
  const ids: string[] = [];
  for (let from = 0; from < count; from += 1000) {
    const jobs = Array.from({ length: 1000 }, (_, i) => jobFixture(from + i));
    ids.push(...jobs.map((j) => j.data.deliveryId));
    await client.rpush(keys.inbox, ...jobs.map(encodeEntry));
  }

  const start = async () => {
    const port = await freePort();
    const cli = spawnCli(['listen'], {
      PORT: String(port),
      HOST: '127.0.0.1',
      REDIS_URL: redis.url,
      QUEUE_NAME: queueName,
    });
    cleanup.push(async () => {
      if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
      await cli.exited;
    });
    await waitFor(() => httpOk(`http://127.0.0.1:${port}/readyz`), 20_000, 'a listener to be ready');
    return { cli, base: `http://127.0.0.1:${port}` };
  };

  const first = await start();
  await waitFor(() => holds(first.cli), 10_000, 'the first listener to move');
  const second = await start();
  await waitFor(async () => (await client.llen(`bull:${queueName}:wait`)) >= 2000, 20_000, 'some jobs to be made');
  first.cli.child.kill('SIGKILL');
  await first.cli.exited;
  const leftMoving = await client.llen(keys.moving);
  const made = await client.llen(`bull:${queueName}:wait`);
  t.diagnostic(`killed with ${made} jobs made, ${leftMoving} entries in moving`);
  assert.ok(made < count, 'killed before the inbox was moved');
  assert.equal(holds(second.cli), false, 'the second listener stood by while the first held the lease');

  // Deliveries answered by the survivor meanwhile.
  const answers = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      fetch(`${second.base}/webhook/sellsy`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: `{"relatedtype":"invoice","event":"created","relatedid":"live-${i}"}`,
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as { deliveryId: string } })),
    ),
  );
  assert.ok(answers.every((a) => a.status === 200));
  ids.push(...answers.map((a) => a.body.deliveryId));

  await waitFor(() => holds(second.cli), 15_000, 'the second listener to take the lease over');
  await waitFor(
    async () => (await client.llen(keys.inbox)) + (await client.llen(keys.moving)) === 0,
    30_000,
    'the inbox to be moved',
  );
  const jobIds = await client.lrange(`bull:${queueName}:wait`, 0, -1);
  assert.equal(jobIds.length, ids.length, 'one job per entry, no more');
  assert.deepEqual(new Set(jobIds), new Set(ids));
});
