/** The destination ledger on a real Redis: what `replay --destination` reads for a page of dead letters at once. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { entriesFor, RedisDestinationLedger } from '../../src/queue/destination-ledger.ts';
import { usePrivateRedis } from '../helpers/private-redis.ts';

const { client } = usePrivateRedis();

test("entriesFor gives each delivery's entry for one destination, null where it has none, in the order asked", async () => {
  const base = 'bull:ledger-test';
  const ledger = new RedisDestinationLedger(client, base, 3600);
  await ledger.record('d1', new Map([['crm', 'sent']]));
  await ledger.record(
    'd2',
    new Map([
      ['crm', 'refused: 404 not found'],
      ['warehouse', 'sent'],
    ]),
  );
  await ledger.record('d3', new Map([['warehouse', 'sent']]));
  assert.deepEqual(await entriesFor(client, base, ['d3', 'd1', 'd4', 'd2'], 'crm'), [
    null,
    'sent',
    null,
    'refused: 404 not found',
  ]);
  assert.deepEqual(await entriesFor(client, base, ['d2', 'd3'], 'warehouse'), ['sent', 'sent']);
  assert.deepEqual(await entriesFor(client, base, [], 'crm'), []);
  // The same hashes the worker reads.
  assert.deepEqual(Object.fromEntries(await ledger.read('d2')), { crm: 'refused: 404 not found', warehouse: 'sent' });
});
