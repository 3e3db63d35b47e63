import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecordSeen, SEEN_TTL_MS } from '../../src/queue/seen.ts';
import { usePrivateRedis } from '../helpers/private-redis.ts';

const { client } = usePrivateRedis();

test('a record keeps the latest time it was seen, whatever order the marks come in', async () => {
  const seen = RecordSeen.of(client, 'test', 'order');
  await seen.mark('929:companies:1', 2_000);
  await seen.mark('929:companies:1', 1_000);
  await seen.mark('929:contacts:2', 500);
  await seen.mark('929:contacts:2', 700);
  assert.deepEqual(await seen.get(['929:companies:1', '929:contacts:2', '929:invoices:3']), [2_000, 700, null]);
  assert.deepEqual(await seen.get([]), []);
});

test('each mark, kept or not, renews the expiry of the record', async () => {
  const seen = new RecordSeen(client, 'test:ttl', 60_000);
  await seen.mark('r', 5);
  await client.pexpire('test:ttl:r', 1_000);
  await seen.mark('r', 4);
  const ttl = await client.pttl('test:ttl:r');
  assert.ok(ttl > 1_000 && ttl <= 60_000, `the key lives on (${ttl} ms left)`);
  // By default a record is kept at least as long as the 30-day look-back reconciliation reads.
  await RecordSeen.of(client, 'test', 'default-ttl').mark('r', 1);
  const kept = await client.pttl('test:default-ttl:seen:r');
  assert.ok(kept > 30 * 24 * 3600 * 1000 && kept <= SEEN_TTL_MS, `kept ${kept} ms`);
});

test('markAll keeps the latest time of each record, as mark does, in one round trip', async () => {
  const seen = RecordSeen.of(client, 'test', 'all');
  await seen.mark('929:companies:1', 2_000);
  await seen.markAll([
    ['929:companies:1', 1_000],
    ['929:contacts:2', 700],
    ['929:contacts:2', 500],
  ]);
  await seen.markAll([]);
  assert.deepEqual(await seen.get(['929:companies:1', '929:contacts:2']), [2_000, 700]);
});
