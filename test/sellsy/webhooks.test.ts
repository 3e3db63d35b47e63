/** Sellsy's webhook management (src/sellsy/webhooks.ts) against the fake Sellsy: lists, catalogue, connect. */
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { SellsyApi } from '../../src/sellsy/api.ts';
import {
  chooseEvents,
  connectWebhook,
  eventCatalogue,
  listAll,
  listWebhooks,
  webhooksPostingTo,
} from '../../src/sellsy/webhooks.ts';
import { type FakeSellsy, fakeApiOptions, resetWebhooks, startFakeSellsy } from '../helpers/fake-sellsy.ts';

const ENDPOINT = 'https://hooks.example.com/webhook/sellsy';

let fake: FakeSellsy;
let api: SellsyApi;

before(async () => {
  fake = await startFakeSellsy();
  api = new SellsyApi(fakeApiOptions(fake));
});

after(async () => {
  await fake.close();
});

beforeEach(() => resetWebhooks(fake));

const writes = () => fake.apiRequests().filter((r) => r.method !== 'GET');

test('listWebhooks reads every page, asking later pages by limit and offset', async () => {
  fake.webhookPageSize = 2;
  for (let i = 0; i < 5; i++) fake.putWebhook({ endpoint: `https://h${i}.example.com/webhook/sellsy` });
  const all = await listWebhooks(api);
  assert.equal(all.length, 5);
  assert.deepEqual(
    fake.apiRequests().map((r) => r.path),
    ['/v2/webhooks', '/v2/webhooks?limit=2&offset=2', '/v2/webhooks?limit=2&offset=4'],
  );
});

test('listWebhooks reads a list answered as a bare array in one request', async () => {
  fake.webhookListShape = 'array';
  for (let i = 0; i < 3; i++) fake.putWebhook({ endpoint: `https://h${i}.example.com/webhook/sellsy` });
  assert.equal((await listWebhooks(api)).length, 3);
  assert.equal(fake.apiRequests().length, 1);
});

test('listAll passes an opaque (cursor) offset back as is, and stops when a page would be asked twice', async () => {
  const pages: Record<string, { data: number[]; offset: string }> = {
    '': { data: [1, 2], offset: 'c-1' },
    'c-1': { data: [3, 4], offset: 'c-2' },
    'c-2': { data: [5, 6], offset: 'c-2' },
  };
  fake.route('GET', /^\/v2\/cursored$/, ({ request }) => {
    const offset = new URL(request.path, fake.url).searchParams.get('offset') ?? '';
    const page = pages[offset] ?? { data: [], offset };
    return { status: 200, body: { data: page.data, pagination: { limit: 2, count: 2, offset: page.offset } } };
  });
  assert.deepEqual(await listAll<number>(api, '/cursored'), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(
    fake.apiRequests().map((r) => r.path),
    ['/v2/cursored', '/v2/cursored?limit=2&offset=c-1', '/v2/cursored?limit=2&offset=c-2'],
  );
});

test('listAll refuses an answer that is neither a list nor {data: [...]}', async () => {
  fake.route('GET', /^\/v2\/odd$/, () => ({ status: 200, body: { items: [] } }));
  await assert.rejects(listAll(api, '/odd'), /GET \/odd answered neither a list nor \{data: \[\.\.\.\]\}/);
});

test('eventCatalogue: the ids of the catalogue in order, once each; an empty catalogue is an error', async () => {
  assert.deepEqual(await eventCatalogue(api), fake.webhookEvents);
  const saved = fake.webhookEvents;
  fake.webhookEvents = [];
  try {
    await assert.rejects(eventCatalogue(api), /answered an empty catalogue/);
  } finally {
    fake.webhookEvents = saved;
  }
});

test('chooseEvents selects by id and by pattern, in catalogue order, and names the entries that select nothing', () => {
  const catalogue = ['client.created', 'invoice.created', 'invoice.step', 'client.deleted'];
  assert.deepEqual(chooseEvents(catalogue, null), { chosen: catalogue, unknown: [] });
  assert.deepEqual(chooseEvents(catalogue, ['invoice.*', 'client.created']), {
    chosen: ['client.created', 'invoice.created', 'invoice.step'],
    unknown: [],
  });
  assert.deepEqual(chooseEvents(catalogue, ['*.deleted', 'order.*', 'invoice.paid']), {
    chosen: ['client.deleted'],
    unknown: ['order.*', 'invoice.paid'],
  });
});

test('connectWebhook creates, then updates the webhook of its endpoint, and names the others posting there', async () => {
  const settings = { url: ENDPOINT, events: ['invoice.*'], name: null, signKey: 'k'.repeat(20) };
  const created = await connectWebhook(api, settings);
  assert.ok(created.action === 'created');
  assert.deepEqual(
    { name: created.name, enabled: created.enabled, of: created.catalogueSize, others: created.others },
    { name: 'sellsy-webhooks', enabled: 3, of: fake.webhookEvents.length, others: [] },
  );
  const twin = fake.putWebhook({ endpoint: ENDPOINT, sign_key: 'old' });
  const updated = await connectWebhook(api, { ...settings, name: 'crm' });
  assert.ok(updated.action === 'updated');
  assert.equal(updated.id, created.id);
  assert.deepEqual(updated.others, [String(twin.id)]);
  assert.equal(webhooksPostingTo(await listWebhooks(api), ENDPOINT).length, 2);
  assert.equal(fake.webhooks().find((w) => String(w.id) === created.id)?.name, 'crm');
});

test('connectWebhook refuses events outside the catalogue before writing anything', async () => {
  const result = await connectWebhook(api, { url: ENDPOINT, events: ['order.*'], name: null, signKey: 'k'.repeat(20) });
  assert.deepEqual(result, { action: 'refused', unknownEvents: ['order.*'], catalogue: fake.webhookEvents });
  assert.deepEqual(writes(), []);
});
