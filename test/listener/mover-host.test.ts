/**
 * The inbox mover's thread (ACK_WRITE=inbox) inside a real listener: when the thread dies, the listener keeps
 * acknowledging into the inbox and starts a new thread, which makes jobs of what came meanwhile.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { inboxKeys } from '../../src/queue/inbox.ts';
import { post, useTestListeners } from '../helpers/listener.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, recordBody } from '../helpers/worker.ts';

const { listener } = useTestListeners();

test('a mover thread that dies is started again, and the deliveries acknowledged meanwhile become jobs', async () => {
  const l = await listener({ ACK_WRITE: 'inbox' });
  const first = l.mover?.thread;
  assert.ok(first, 'a mover thread runs');
  const before = await post(l.url, recordBody('1', 1), json);
  assert.equal(before.status, 200);
  await waitFor(async () => (await l.queue.count()) === 1, 10_000, 'the first job');

  const lease = inboxKeys(l.config.queuePrefix, l.config.queueName).lease;
  const client = l.queueProducer.client;
  const token = await client.get(lease);
  assert.ok(token, 'the thread holds the lease');
  await first.terminate();
  assert.equal(l.mover?.thread, null, 'no thread until the restart');
  // Its lease is given back at once, not left to expire (5 s) with nobody moving.
  await waitFor(async () => (await client.get(lease)) !== token, 2_000, "the dead thread's lease to be released");
  const during = await Promise.all([2, 3, 4].map((n) => post(l.url, recordBody(String(n), n), json)));
  assert.deepEqual(
    during.map((a) => a.status),
    [200, 200, 200],
    'acknowledged into the inbox without a mover',
  );

  await waitFor(() => (l.mover?.thread ?? first) !== first, 10_000, 'a new mover thread');
  await waitFor(async () => (await l.queue.count()) === 4, 10_000, 'the jobs of the deliveries acknowledged meanwhile');
  const ids = new Set((await l.queue.getJobs(['wait'])).map((j) => j.id));
  for (const a of [before, ...during]) assert.ok(ids.has(a.body.deliveryId as string), `${a.body.deliveryId} is a job`);
  assert.ok(
    l.logs.some((line) => /inbox mover thread stopped; starting it again/.test(String(line.msg))),
    'the restart is logged',
  );
});
