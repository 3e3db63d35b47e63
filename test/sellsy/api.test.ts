import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { PermanentError, RetryLaterError } from '../../src/errors.ts';
import { objectPath, SellsyApi, type SellsyApiOptions, statusOf } from '../../src/sellsy/api.ts';
import { type FakeSellsy, startFakeSellsy } from '../helpers/fake-sellsy.ts';

let fake: FakeSellsy;

before(async () => {
  fake = await startFakeSellsy();
});

after(async () => {
  await fake.close();
});

beforeEach(() => {
  fake.requests.length = 0;
  fake.expiresIn = 3600;
  fake.quota = { bySecond: 10, byMinute: 600, byDay: 100_000, byMonth: 1_000_000 };
  fake.put('invoices', '42', { id: 42, number: 'FAC-2026-0042', status: 'paid' });
});

function options(overrides: Partial<SellsyApiOptions> = {}): SellsyApiOptions {
  return {
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    apiUrl: fake.apiUrl,
    tokenUrl: fake.tokenUrl,
    timeoutMs: 5000,
    ...overrides,
  };
}

/** A clock the test moves by hand. */
function manualClock(start = Date.UTC(2026, 0, 1, 12, 0, 0)) {
  const clock = { now: start, read: () => clock.now };
  return clock;
}

function bearers(): (string | null)[] {
  return fake.apiRequests().map((r) => r.authorization);
}

test('objectPath maps each related type to its Sellsy collection', () => {
  const expected: Record<string, string> = {
    invoice: '/invoices/7',
    estimate: '/estimates/7',
    order: '/orders/7',
    creditnote: '/credit-notes/7',
    'credit-note': '/credit-notes/7',
    delivery: '/deliveries/7',
    client: '/companies/7',
    prospect: '/companies/7',
    supplier: '/companies/7',
    third: '/companies/7',
    company: '/companies/7',
    individual: '/individuals/7',
    people: '/contacts/7',
    contact: '/contacts/7',
    opportunity: '/opportunities/7',
    task: '/tasks/7',
    item: '/items/7',
    payment: '/payments/7',
  };
  for (const [type, path] of Object.entries(expected)) assert.equal(objectPath(type, '7'), path, type);
});

test('objectPath is null for a related type without a look-up', () => {
  assert.equal(objectPath('proforma', '7'), null);
  assert.equal(objectPath('spaceship', '7'), null);
});

test('objectPath is null for an id that could leave the collection', () => {
  assert.equal(objectPath('invoice', '..'), null);
  assert.equal(objectPath('invoice', '1/../../webhooks'), null);
  assert.equal(objectPath('invoice', ''), null);
});

test('getObject returns the object Sellsy holds', async () => {
  const api = new SellsyApi(options());
  assert.deepEqual(await api.getObject('invoice', '42'), { id: 42, number: 'FAC-2026-0042', status: 'paid' });
  assert.deepEqual(
    fake.apiRequests().map((r) => [r.method, r.path]),
    [['GET', '/v2/invoices/42']],
  );
});

test('the token request sends the client credentials as JSON', async () => {
  const api = new SellsyApi(options());
  await api.getObject('invoice', '42');
  assert.deepEqual(fake.tokenRequests()[0]?.body, {
    grant_type: 'client_credentials',
    client_id: fake.clientId,
    client_secret: fake.clientSecret,
  });
});

test('one token is fetched for concurrent calls and shared by all of them', async () => {
  const api = new SellsyApi(options());
  await Promise.all(Array.from({ length: 5 }, () => api.getObject('invoice', '42')));
  assert.equal(fake.tokenRequests().length, 1);
  assert.equal(api.tokenRequests, 1);
  const [token] = bearers();
  assert.match(token ?? '', /^Bearer tok-\d+$/);
  assert.deepEqual(bearers(), Array(5).fill(token));
});

test('the token is reused by later calls while it is valid', async () => {
  const api = new SellsyApi(options());
  await api.getObject('invoice', '42');
  await api.getObject('invoice', '42');
  assert.equal(fake.tokenRequests().length, 1);
});

test('the token is refreshed 60 s before it expires', async () => {
  const clock = manualClock();
  const api = new SellsyApi(options(), clock.read);
  await api.getObject('invoice', '42');
  clock.now += 3600_000 - 61_000;
  await api.getObject('invoice', '42');
  assert.equal(fake.tokenRequests().length, 1, 'still valid for more than 60 s: reused');
  clock.now += 2_000;
  await api.getObject('invoice', '42');
  assert.equal(fake.tokenRequests().length, 2, 'within 60 s of expiry: refreshed');
  const [first, second, third] = bearers();
  assert.equal(second, first);
  assert.notEqual(third, first);
});

test('a 401 on an expired token fetches one fresh token and the call succeeds', async () => {
  const api = new SellsyApi(options());
  await api.getObject('invoice', '42');
  fake.expireTokens();
  assert.deepEqual(await api.getObject('invoice', '42'), { id: 42, number: 'FAC-2026-0042', status: 'paid' });
  assert.equal(fake.tokenRequests().length, 2);
  const [first, rejected, retried] = bearers();
  assert.equal(rejected, first);
  assert.notEqual(retried, first);
  assert.equal(api.calls, 3);
});

test('a 401 that persists with a fresh token is a PermanentError', async () => {
  const api = new SellsyApi(options());
  fake.failNext(2, 401);
  await assert.rejects(api.getObject('invoice', '42'), (err: unknown) => {
    assert.ok(err instanceof PermanentError);
    assert.match(err.message, /answered 401 with a fresh token/);
    return true;
  });
  assert.equal(fake.tokenRequests().length, 2);
  assert.equal(fake.apiRequests().length, 2);
});

test('a 429 with Retry-After is a RetryLaterError with that delay', async () => {
  const api = new SellsyApi(options());
  fake.failNext(1, 429, { 'Retry-After': '2', 'X-Quota-Remaining-By-Second': '0' });
  await assert.rejects(api.getObject('invoice', '42'), (err: unknown) => {
    assert.ok(err instanceof RetryLaterError);
    assert.equal(err.delayMs, 2000);
    return true;
  });
  assert.equal(api.rateLimited, 1);
});

test('a 429 without Retry-After and with the second quota spent asks to wait one second', async () => {
  const api = new SellsyApi(options());
  fake.failNext(1, 429, { 'X-Quota-Remaining-By-Second': '0' });
  await assert.rejects(api.getObject('invoice', '42'), (err: unknown) => {
    assert.ok(err instanceof RetryLaterError);
    assert.equal(err.delayMs, 1000);
    return true;
  });
});

test('a 429 without Retry-After and with the minute quota spent asks to wait until the next minute', async () => {
  const clock = manualClock(Date.UTC(2026, 0, 1, 12, 0, 45, 250));
  const api = new SellsyApi(options(), clock.read);
  fake.failNext(1, 429, { 'X-Quota-Remaining-By-Minute': '0' });
  await assert.rejects(api.getObject('invoice', '42'), (err: unknown) => {
    assert.ok(err instanceof RetryLaterError);
    assert.equal(err.delayMs, 14_750);
    return true;
  });
});

test('a 429 with the daily quota spent asks to check again in 5 minutes, not every second', async () => {
  const api = new SellsyApi(options());
  fake.failNext(1, 429, { 'X-Quota-Remaining-By-Day': '0', 'X-Quota-Remaining-By-Second': '0' });
  await assert.rejects(api.getObject('invoice', '42'), (err: unknown) => {
    assert.ok(err instanceof RetryLaterError);
    assert.equal(err.delayMs, 300_000);
    return true;
  });
});

test('a 404 is a PermanentError naming the status, the path and Sellsy’s error', async () => {
  const api = new SellsyApi(options());
  await assert.rejects(api.getObject('invoice', '404404'), (err: unknown) => {
    assert.ok(err instanceof PermanentError);
    assert.match(err.message, /GET \/invoices\/404404 answered 404/);
    assert.match(err.message, /"invoices 404404 not found", code 404/);
    assert.equal(statusOf(err), 404);
    return true;
  });
});

test('a 402 plan limit and a 403 missing scope are PermanentErrors', async () => {
  const api = new SellsyApi(options());
  for (const status of [402, 403]) {
    fake.failNext(1, status);
    await assert.rejects(
      api.getObject('invoice', '42'),
      (err: unknown) => err instanceof PermanentError && statusOf(err) === status,
    );
  }
});

test('a 500 is an ordinary error, retried by the worker', async () => {
  const api = new SellsyApi(options());
  fake.failNext(1, 500);
  await assert.rejects(api.getObject('invoice', '42'), (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.ok(!(err instanceof PermanentError));
    assert.ok(!(err instanceof RetryLaterError));
    assert.match(err.message, /answered 500/);
    assert.equal(statusOf(err), 500);
    return true;
  });
});

test('a call slower than timeoutMs is an ordinary error', async () => {
  const api = new SellsyApi(options({ timeoutMs: 100 }));
  await api.getObject('invoice', '42');
  fake.delayNext(1, 1000);
  await assert.rejects(api.getObject('invoice', '42'), (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.ok(!(err instanceof PermanentError));
    assert.match(err.message, /timed out after 100 ms/);
    assert.equal(statusOf(err), null, 'no answer, no status');
    return true;
  });
});

test('an aborted caller signal stops the call with an ordinary error', async () => {
  const api = new SellsyApi(options());
  await api.getObject('invoice', '42');
  fake.delayNext(1, 1000);
  const controller = new AbortController();
  const call = api.getObject('invoice', '42', { signal: controller.signal });
  setTimeout(() => controller.abort(), 50);
  await assert.rejects(call, (err: unknown) => {
    assert.ok(!(err instanceof PermanentError));
    assert.match((err as Error).message, /aborted/);
    return true;
  });
});

test('a wrong client secret is a PermanentError that does not show the secret', async () => {
  const secret = 'wrong-secret-value';
  const api = new SellsyApi(options({ clientSecret: secret }));
  await assert.rejects(api.getObject('invoice', '42'), (err: unknown) => {
    assert.ok(err instanceof PermanentError);
    assert.match(err.message, /Sellsy rejected the client credentials/);
    assert.match(err.message, /invalid_client/);
    assert.ok(!err.message.includes(secret));
    return true;
  });
  assert.equal(fake.apiRequests().length, 0);
});

test('a token endpoint that cannot be reached is an ordinary error', async () => {
  const api = new SellsyApi(options({ tokenUrl: 'http://127.0.0.1:1/oauth2/access-tokens' }));
  await assert.rejects(api.getObject('invoice', '42'), (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.ok(!(err instanceof PermanentError));
    return true;
  });
});

test('the quota headers of the latest answer are kept', async () => {
  const api = new SellsyApi(options());
  await api.getObject('invoice', '42');
  assert.deepEqual(
    { ...api.quota, at: null },
    {
      bySecond: 10,
      byMinute: 600,
      byDay: 100_000,
      byMonth: 1_000_000,
      at: null,
    },
  );
  fake.quota = { bySecond: 3, byMinute: 20, byDay: 500, byMonth: 9000 };
  await api.getObject('invoice', '42');
  assert.equal(api.quota.bySecond, 3);
  assert.equal(api.quota.byMonth, 9000);
});

test('a spent second quota makes the next call wait for the next second', async () => {
  const api = new SellsyApi(options());
  fake.quota.bySecond = 0;
  const before = Date.now();
  await api.getObject('invoice', '42');
  fake.quota.bySecond = 10;
  await api.getObject('invoice', '42');
  const [, second] = fake.apiRequests();
  assert.ok(second !== undefined);
  assert.ok(second.at >= Math.floor(before / 1000) * 1000 + 1000, 'sent in a later second');
  assert.equal(api.rateLimited, 0);
});

test('request sends a JSON body and returns the parsed answer', async () => {
  fake.route('POST', /^\/v2\/echo$/, ({ request }) => ({ status: 201, body: { received: request.body } }));
  const api = new SellsyApi(options());
  assert.deepEqual(await api.request('POST', '/echo', { name: 'hook' }), { received: { name: 'hook' } });
});
