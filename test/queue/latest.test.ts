import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LatestDeliveries } from '../../src/queue/latest.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { usePrivateRedis } from '../helpers/private-redis.ts';

const { client } = usePrivateRedis();

test('the latest delivery of a record is the one received last, whatever order the offers come in', async () => {
  const latest = new LatestDeliveries(client, 'test:order', 60_000);
  const older = jobFixture(1, '2026-11-28T10:00:00.000Z');
  const newer = jobFixture(2, '2026-11-28T10:00:01.000Z');
  await latest.offer('929:invoice:7', 'invoice.updated', newer.data);
  await latest.offer('929:invoice:7', 'invoice.step', older.data);
  const got = await latest.get('929:invoice:7');
  assert.equal(got?.name, 'invoice.updated');
  assert.equal(got?.data.deliveryId, newer.data.deliveryId);
  assert.equal(got?.done, false);
  assert.equal(await latest.get('929:invoice:8'), null, 'another record has nothing stored');
});

test('a record is done once its latest delivery was handled, and not done again when a newer one arrives', async () => {
  const latest = new LatestDeliveries(client, 'test:done', 60_000);
  const first = jobFixture(3, '2026-11-28T10:00:00.000Z');
  await latest.offer('r', 'invoice.step', first.data);
  await latest.markDone('r', first.data.deliveryId);
  assert.equal((await latest.get('r'))?.done, true);
  const second = jobFixture(4, '2026-11-28T10:00:02.000Z');
  await latest.offer('r', 'invoice.step', second.data);
  assert.equal((await latest.get('r'))?.done, false);
  const ttl = await client.pttl('test:done:latest:r');
  assert.ok(ttl > 0 && ttl <= 60_000, `the hash expires (${ttl} ms left)`);
});

test('an offer for tracked records only stores nothing for a record without a hash', async () => {
  const latest = new LatestDeliveries(client, 'test:tracked', 60_000);
  const first = jobFixture(5, '2026-11-28T10:00:00.000Z');
  assert.equal(await latest.offer('r', 'invoice.step', first.data, { trackedOnly: true }), 'untracked');
  assert.equal(await latest.get('r'), null);
  assert.equal(await latest.offer('r', 'invoice.step', first.data), 'stored');
  const folded = jobFixture(6, '2026-11-28T10:00:01.000Z');
  assert.equal(await latest.offer('r', 'invoice.step', folded.data, { trackedOnly: true }), 'stored');
  assert.equal((await latest.get('r'))?.data.deliveryId, folded.data.deliveryId);
  assert.equal(await latest.offer('r', 'invoice.step', first.data, { trackedOnly: true }), 'older');
});
