import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { PermanentError } from '../../src/errors.ts';
import type { HandlerContext } from '../../src/handlers/handler.ts';
import { createSellsyFetchHandler } from '../../src/handlers/sellsy-fetch.ts';
import { createLogger } from '../../src/logger.ts';
import { SellsyAccounts, SellsyApi } from '../../src/sellsy/api.ts';
import type { SellsyEvent } from '../../src/sellsy/payload.ts';
import { type FakeSellsy, startFakeSellsy } from '../helpers/fake-sellsy.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { LogCapture } from '../helpers/listener.ts';

let fake: FakeSellsy;
let api: SellsyApi;

before(async () => {
  fake = await startFakeSellsy();
  api = new SellsyApi({
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    apiUrl: fake.apiUrl,
    tokenUrl: fake.tokenUrl,
    timeoutMs: 5000,
  });
  fake.put('invoices', '42', { id: 42, status: 'paid' });
  fake.put('companies', '38484', { id: 38484, type: 'client', name: 'Acme' });
});

after(async () => {
  await fake.close();
});

beforeEach(() => {
  fake.requests.length = 0;
});

function contextFor(
  event: SellsyEvent | null,
  logs?: LogCapture,
  signal = new AbortController().signal,
): HandlerContext {
  const { data } = jobFixture(1);
  return {
    deliveryId: data.deliveryId,
    name: event?.relatedType && event.event ? `${event.relatedType}.${event.event}` : 'unknown',
    data: { ...data, event },
    attempt: 1,
    attempts: 3,
    signal,
    log: logs ? createLogger('debug', logs) : createLogger('silent'),
  };
}

function sellsyEvent(fields: Partial<SellsyEvent>): SellsyEvent {
  return {
    eventType: 'docslog',
    event: 'step',
    relatedType: 'invoice',
    relatedId: '42',
    ownerType: 'staff',
    ownerId: '1084',
    corpId: '929',
    timestamp: '1778280800',
    extra: {},
    ...fields,
  };
}

const handler = () => createSellsyFetchHandler(api);

test('the handler sets context.object to the object Sellsy holds', async () => {
  const event = sellsyEvent({});
  const context = contextFor(event);
  await handler()(event, context);
  assert.deepEqual(context.object, { id: 42, status: 'paid' });
  assert.deepEqual(
    fake.apiRequests().map((r) => r.path),
    ['/v2/invoices/42'],
  );
});

test('a third event fetches the company', async () => {
  const event = sellsyEvent({ eventType: 'thirdlog', event: 'updated', relatedType: 'third', relatedId: '38484' });
  const context = contextFor(event);
  await handler()(event, context);
  assert.deepEqual(context.object, { id: 38484, type: 'client', name: 'Acme' });
});

test('a deleted event is not fetched and leaves context.object undefined', async () => {
  const event = sellsyEvent({ event: 'deleted' });
  const logs = new LogCapture();
  const context = contextFor(event, logs);
  await handler()(event, context);
  assert.equal(context.object, undefined);
  assert.equal(fake.requests.length, 0);
  assert.ok(logs.lines.some((l) => l.level === 20 && String(l.msg).includes('deleted')));
});

test('an unparsed event is refused with a PermanentError', async () => {
  await assert.rejects(handler()(null, contextFor(null)), (err: unknown) => {
    assert.ok(err instanceof PermanentError);
    assert.equal(err.message, 'unparsed event: nothing to fetch');
    return true;
  });
  assert.equal(fake.requests.length, 0);
});

test('a related type without a look-up leaves context.object undefined without an error', async () => {
  const event = sellsyEvent({ relatedType: 'proforma' });
  const logs = new LogCapture();
  const context = contextFor(event, logs);
  await handler()(event, context);
  assert.equal(context.object, undefined);
  assert.equal(fake.requests.length, 0);
  assert.ok(logs.lines.some((l) => l.level === 20 && l.relatedType === 'proforma'));
});

test('an event without relatedid leaves context.object undefined without an error', async () => {
  const event = sellsyEvent({ relatedId: null });
  const context = contextFor(event);
  await handler()(event, context);
  assert.equal(context.object, undefined);
  assert.equal(fake.requests.length, 0);
});

test('a relatedid that is not a plain id is refused with a PermanentError and never sent', async () => {
  const event = sellsyEvent({ relatedId: '../webhooks' });
  await assert.rejects(handler()(event, contextFor(event)), PermanentError);
  assert.equal(fake.requests.length, 0);
});

test('an object Sellsy does not hold fails the job with a PermanentError', async () => {
  const event = sellsyEvent({ relatedId: '999' });
  await assert.rejects(handler()(event, contextFor(event)), PermanentError);
});

test('the handler passes context.signal to the API call', async () => {
  const event = sellsyEvent({});
  const controller = new AbortController();
  controller.abort();
  const context = contextFor(event, undefined, controller.signal);
  await assert.rejects(handler()(event, context), (err: unknown) => {
    assert.ok(!(err instanceof PermanentError));
    assert.match((err as Error).message, /aborted/);
    return true;
  });
  assert.equal(context.object, undefined);
  assert.equal(fake.apiRequests().length, 0);
});

test("with several accounts, each job is fetched with its account's client, and the counters add up every client", async () => {
  fake.addAccount('client-138', 'secret-138').put('invoices', '42', { id: 42, owner: '138' });
  const accounts = SellsyAccounts.fromConfig({
    accountId: '929',
    credentials: new Map([['138', { clientId: 'client-138', clientSecret: 'secret-138' }]]),
    single: { clientId: fake.clientId, clientSecret: fake.clientSecret },
    apiUrl: fake.apiUrl,
    tokenUrl: fake.tokenUrl,
    timeoutMs: 5000,
  });
  const fetchFor = async (account: string) => {
    const base = contextFor(sellsyEvent({ corpId: account }));
    const ctx: HandlerContext = { ...base, data: { ...base.data, account } };
    await createSellsyFetchHandler(accounts)(ctx.data.event, ctx);
    return ctx.object;
  };
  assert.deepEqual(await fetchFor('138'), { id: 42, owner: '138' });
  assert.deepEqual(await fetchFor('929'), { id: 42, status: 'paid' });
  assert.equal(accounts.calls, 2);
  await assert.rejects(fetchFor('777'), (err: unknown) => {
    assert.ok(err instanceof PermanentError);
    assert.match(err.message, /no Sellsy API credentials for account "777"/);
    return true;
  });
  assert.equal(accounts.calls, 2, 'nothing was sent for the account without credentials');
});
