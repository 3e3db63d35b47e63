import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import type { HandlerContext } from '../../src/handlers/handler.ts';
import { createSellsyFetchHandler } from '../../src/handlers/sellsy-fetch.ts';
import { createLogger } from '../../src/logger.ts';
import { deferredRefusal } from '../../src/queue/contract.ts';
import { recordKeyOf } from '../../src/queue/records.ts';
import { PLANS } from '../../src/reconcile/collections.ts';
import { fingerprintOf } from '../../src/reconcile/fingerprint.ts';
import { type Change, syntheticJob } from '../../src/reconcile/synthetic.ts';
import { SellsyApi } from '../../src/sellsy/api.ts';
import { jobNameOf, parseDelivery } from '../../src/sellsy/payload.ts';
import { startFakeSellsy } from '../helpers/fake-sellsy.ts';
import { jobFixture } from '../helpers/jobs.ts';

const change: Change = {
  account: '929',
  collection: 'companies',
  relatedType: 'third',
  id: '38484',
  changedAt: Date.UTC(2026, 10, 28, 9, 53, 20),
  fingerprint: null,
};

test('a synthetic delivery is named <relatedtype>.reconciled and its event is its raw body parsed', () => {
  const { name, data } = syntheticJob(change, new Date(Date.UTC(2026, 10, 28, 10)));
  assert.equal(name, 'third.reconciled');
  assert.equal(jobNameOf(data.event), name, 'the name the listener would give such a body');
  assert.deepEqual(data.event, parseDelivery(Buffer.from(data.rawBody), 'application/json').event);
  assert.equal(data.event?.timestamp, String((change.changedAt ?? 0) / 1000));
  assert.equal(data.receivedAt, '2026-11-28T10:00:00.000Z');
  assert.deepEqual(data.signature, { status: 'internal', header: null, scope: 'body' });
  assert.equal(deferredRefusal(loadConfig({ SELLSY_SIGN_KEY: 'k', SIGNATURE_CHECK: 'worker' }), data), null);
});

test('the same change gives the same deduplication id; another change time or fingerprint another one', () => {
  const a = syntheticJob(change, new Date()).data;
  const again = syntheticJob(change, new Date(Date.now() + 60_000)).data;
  assert.notEqual(a.deliveryId, again.deliveryId);
  assert.equal(a.dedupKey, again.dedupKey);
  assert.notEqual(
    syntheticJob({ ...change, changedAt: (change.changedAt ?? 0) + 1000 }, new Date()).data.dedupKey,
    a.dedupKey,
  );
  const byFingerprint = (fingerprint: string) =>
    syntheticJob(
      { ...change, collection: 'invoices', relatedType: 'invoice', changedAt: null, fingerprint },
      new Date(),
    ).data.dedupKey;
  assert.notEqual(byFingerprint('a'), byFingerprint('b'));
  assert.notEqual(syntheticJob({ ...change, account: '930' }, new Date()).data.dedupKey, a.dedupKey);
});

test('a company reconciled and the same company posted as client are one record', () => {
  const webhook = jobFixture(1).data;
  webhook.event = parseDelivery(
    Buffer.from('{"eventType":"thirdlog","event":"updated","relatedtype":"client","relatedid":"38484","corpid":"929"}'),
    'application/json',
  ).event;
  assert.equal(recordKeyOf(syntheticJob(change, new Date()).data), recordKeyOf(webhook));
  assert.equal(recordKeyOf(webhook), '929:companies:38484');
});

test('an invoice fingerprint changes with its status or amounts, not with its signed pdf link', () => {
  const invoice = { id: 1, status: 'due', amounts: { total: '10.00', tax: '2.00' }, pdf_link: 'https://x/1?t=a' };
  const base = fingerprintOf(invoice);
  assert.equal(fingerprintOf({ ...invoice, pdf_link: 'https://x/1?t=b' }), base);
  assert.equal(
    fingerprintOf({ ...invoice, amounts: { tax: '2.00', total: '10.00' } }),
    base,
    'key order is not a change',
  );
  assert.notEqual(fingerprintOf({ ...invoice, status: 'paid' }), base);
  assert.notEqual(fingerprintOf({ ...invoice, amounts: { total: '12.00', tax: '2.00' } }), base);
});

test('sellsy-fetch fetches the object a synthetic delivery names, for every collection reconciliation reads', async (t) => {
  const fake = await startFakeSellsy();
  t.after(() => fake.close());
  const api = new SellsyApi({
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    apiUrl: fake.apiUrl,
    tokenUrl: fake.tokenUrl,
    timeoutMs: 5000,
  });
  const fetch = createSellsyFetchHandler(api);
  for (const plan of PLANS) {
    fake.put(plan.collection, '77', { id: 77, collection: plan.collection });
    const { name, data } = syntheticJob(
      { ...change, collection: plan.collection, relatedType: plan.relatedType, id: '77' },
      new Date(),
    );
    const context: HandlerContext = {
      deliveryId: data.deliveryId,
      name,
      data,
      attempt: 1,
      attempts: 1,
      signal: new AbortController().signal,
      log: createLogger('silent'),
    };
    await fetch(data.event, context);
    assert.deepEqual(
      context.object,
      { id: 77, collection: plan.collection },
      `${name} fetched from ${plan.collection}`,
    );
  }
});
