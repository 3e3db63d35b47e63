import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { parseConnectArgs, parseStatusArgs, sellsyConnect, sellsyStatus } from '../../src/cli/sellsy.ts';
import { type Config, loadConfig } from '../../src/config/config.ts';
import { type FakeSellsy, resetWebhooks, startFakeSellsy } from '../helpers/fake-sellsy.ts';

const ENDPOINT = 'https://hooks.example.com/webhook/sellsy';
const INVOICE_EVENTS = ['invoice.created', 'invoice.updated', 'invoice.step'];

let fake: FakeSellsy;
let config: Config;

before(async () => {
  fake = await startFakeSellsy();
  config = loadConfig({
    SELLSY_CLIENT_ID: fake.clientId,
    SELLSY_CLIENT_SECRET: fake.clientSecret,
    SELLSY_API_URL: fake.apiUrl,
    SELLSY_TOKEN_URL: fake.tokenUrl,
  });
});

after(async () => {
  await fake.close();
});

beforeEach(() => resetWebhooks(fake));

/** Runs a command with its output collected. */
async function run(command: (out: (line: string) => void) => Promise<number>) {
  const lines: string[] = [];
  const code = await command((line) => lines.push(line));
  return { code, lines, text: lines.join('\n') };
}

/** As the CLI runs it: arguments checked first, a usage error exits 2. */
const connect = (args: string[], cfg: Config = config) =>
  run(async (out) => {
    const parsed = parseConnectArgs(args);
    if (typeof parsed !== 'string') return sellsyConnect(cfg, parsed, out);
    out(`sellsy connect: ${parsed}`);
    return 2;
  });
const status = (url?: string, cfg: Config = config) => run((out) => sellsyStatus(cfg, { url: url ?? null }, out));

function keyOf(lines: string[]): string {
  const keys = lines.filter((l) => l.startsWith('SELLSY_SIGN_KEY='));
  assert.equal(keys.length, 1, `one SELLSY_SIGN_KEY line in:\n${lines.join('\n')}`);
  return (keys[0] as string).slice('SELLSY_SIGN_KEY='.length);
}

function enabledIds(configuration: { id: string; is_enabled: boolean }[]): string[] {
  return configuration.filter((c) => c.is_enabled).map((c) => c.id);
}

test('sellsy connect run twice leaves one webhook: the first run creates it, the second updates it with a new key', async () => {
  const first = await connect(['--url', ENDPOINT]);
  assert.equal(first.code, 0, first.text);
  const id = fake.webhooks()[0]?.id;
  assert.ok(
    first.lines[0]?.startsWith(`created webhook ${id} "sellsy-webhooks" → ${ENDPOINT}: 9 of 9 events`),
    first.text,
  );
  const firstKey = keyOf(first.lines);
  assert.match(firstKey, /^[A-Za-z0-9_-]{32,}$/);
  assert.equal(fake.webhooks()[0]?.sign_key, firstKey);

  const second = await connect(['--url', ENDPOINT]);
  assert.equal(second.code, 0, second.text);
  assert.ok(second.lines[0]?.startsWith(`updated webhook ${id} `), second.text);
  const secondKey = keyOf(second.lines);
  assert.notEqual(secondKey, firstKey);
  assert.match(second.text, /SELLSY_SIGN_KEY=<new key>,<old key>/, 'the rotation reminder');

  const stored = fake.webhooks();
  assert.equal(stored.length, 1);
  assert.equal(stored[0]?.sign_key, secondKey);
  const writes = fake.apiRequests().filter((r) => r.method !== 'GET');
  assert.deepEqual(
    writes.map((r) => `${r.method} ${r.path}`),
    ['POST /v2/webhooks', `PUT /v2/webhooks/${id}`],
  );
});

test('sellsy connect --sign-key sets the key given (a rotation deployed first), and refuses a short one', async () => {
  const key = 'a-key-deployed-beside-the-old-one-0123';
  const result = await connect(['--url', ENDPOINT, '--sign-key', key]);
  assert.equal(result.code, 0);
  assert.equal(keyOf(result.lines), key);
  assert.equal(fake.webhooks().at(-1)?.sign_key, key);
  const short = await connect(['--url', ENDPOINT, '--sign-key', 'short']);
  assert.equal(short.code, 2);
  assert.match(short.lines.join('\n'), /--sign-key must be at least 16 printable characters/);
});

test('sellsy connect stores the endpoint, JSON deliveries, type http, enabled, and every catalogue event by default', async () => {
  const { code, text } = await connect(['--url', ENDPOINT]);
  assert.equal(code, 0, text);
  const [webhook] = fake.webhooks();
  assert.ok(webhook);
  assert.equal(webhook.endpoint, ENDPOINT);
  assert.equal(webhook.json_content_type, true);
  assert.equal(webhook.type, 'http');
  assert.equal(webhook.is_enabled, true);
  assert.equal(webhook.name, 'sellsy-webhooks');
  assert.deepEqual(enabledIds(webhook.configuration), fake.webhookEvents);
});

test('sellsy connect --events invoice.* enables only the invoice events', async () => {
  const { code, text } = await connect(['--url', ENDPOINT, '--events', 'invoice.*']);
  assert.equal(code, 0, text);
  assert.match(text, /: 3 of 9 events/);
  assert.deepEqual(enabledIds(fake.webhooks()[0]?.configuration ?? []), INVOICE_EVENTS);
});

test('sellsy connect --events mixes ids and patterns, and a narrower second run disables the rest', async () => {
  assert.equal((await connect(['--url', ENDPOINT])).code, 0);
  const { code, text } = await connect(['--url', ENDPOINT, '--events', 'client.created, invoice.*', '--name', 'crm']);
  assert.equal(code, 0, text);
  const [webhook] = fake.webhooks();
  assert.deepEqual(enabledIds(webhook?.configuration ?? []), ['client.created', ...INVOICE_EVENTS]);
  assert.equal(webhook?.name, 'crm');
});

test('sellsy connect keeps the name of an existing webhook when --name is not given', async () => {
  fake.putWebhook({ endpoint: ENDPOINT, name: 'named by hand', sign_key: 'old' });
  const { code, text } = await connect(['--url', ENDPOINT]);
  assert.equal(code, 0, text);
  assert.equal(fake.webhooks()[0]?.name, 'named by hand');
});

test('sellsy connect refuses an event outside the catalogue, lists valid ids, and changes nothing', async () => {
  const { code, text } = await connect(['--url', ENDPOINT, '--events', 'invoice.created,invoice.paid']);
  assert.equal(code, 2);
  assert.match(text, /"invoice\.paid" is not in Sellsy's event catalogue; valid ids include client\.created, /);
  assert.equal(fake.webhooks().length, 0);
  assert.ok(!fake.apiRequests().some((r) => r.method !== 'GET'));
});

test('sellsy connect refuses a pattern that matches no event', async () => {
  const { code, text } = await connect(['--url', ENDPOINT, '--events', 'order.*']);
  assert.equal(code, 2);
  assert.match(text, /"order\.\*" is not in Sellsy's event catalogue/);
});

test('sellsy connect refuses a URL that is not https, before any API call', async () => {
  const { code, text } = await connect(['--url', 'http://hooks.example.com/webhook/sellsy']);
  assert.equal(code, 2);
  assert.match(text, /is not https/);
  assert.equal(fake.requests.length, 0);
});

test('parseConnectArgs accepts http on a loopback host only', () => {
  for (const url of ['http://localhost:3000/webhook/sellsy', 'http://127.0.0.1:3000/webhook/sellsy/929']) {
    const parsed = parseConnectArgs(['--url', url]);
    assert.equal(typeof parsed, 'object', String(parsed));
  }
  assert.match(String(parseConnectArgs(['--url', 'http://10.0.0.5/webhook/sellsy'])), /is not https/);
});

test('parseConnectArgs refuses a URL whose path is not where the listener takes deliveries', () => {
  for (const url of [
    'https://hooks.example.com/',
    'https://hooks.example.com/webhook',
    'https://hooks.example.com/webhook/sellsy/',
    'https://hooks.example.com/webhook/sellsy/929/extra',
    'https://hooks.example.com/hooks/webhook/sellsy',
  ]) {
    assert.match(String(parseConnectArgs(['--url', url])), /must end with the path \/webhook\/sellsy/, url);
  }
  assert.match(String(parseConnectArgs(['--url', 'https://u:p@hooks.example.com/webhook/sellsy'])), /credentials/);
  assert.match(String(parseConnectArgs(['--url', 'https://hooks.example.com/webhook/sellsy?x=1'])), /query/);
  assert.match(String(parseConnectArgs([])), /--url is required/);
  assert.match(String(parseConnectArgs(['--url', ENDPOINT, '--events', ' , '])), /--events is empty/);
  assert.match(String(parseConnectArgs(['--url', ENDPOINT, '--bogus'])), /Usage: sellsy-webhooks sellsy connect/);
});

test('parseConnectArgs returns the endpoint, events and name', () => {
  assert.deepEqual(
    parseConnectArgs([
      '--url',
      'https://HOOKS.example.com:443/webhook/sellsy/929',
      '--events',
      'a.b,c.*,a.b',
      '--name',
      'x',
    ]),
    { url: 'https://hooks.example.com/webhook/sellsy/929', events: ['a.b', 'c.*'], name: 'x', signKey: null },
  );
  assert.deepEqual(parseConnectArgs(['--url', ENDPOINT]), { url: ENDPOINT, events: null, name: null, signKey: null });
});

test('sellsy connect on an account endpoint says where an account key goes', async () => {
  const { code, text } = await connect(['--url', `${ENDPOINT}/929`]);
  assert.equal(code, 0, text);
  assert.match(text, /This endpoint names account 929: if SELLSY_ACCOUNT_KEYS has an entry for "929"/);
});

test('sellsy connect without Sellsy API credentials names SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET and exits 78', async () => {
  const { code, text } = await connect(['--url', ENDPOINT], loadConfig({}));
  assert.equal(code, 78);
  assert.match(text, /set SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET/);
  assert.equal((await status(undefined, loadConfig({}))).code, 78);
});

test('sellsy connect finds the webhook of its endpoint on a later page of the list', async () => {
  fake.webhookPageSize = 2;
  for (let i = 0; i < 5; i++) fake.putWebhook({ endpoint: `https://other${i}.example.com/webhook/sellsy` });
  const existing = fake.putWebhook({ endpoint: ENDPOINT, sign_key: 'old' });
  const { code, text } = await connect(['--url', ENDPOINT]);
  assert.equal(code, 0, text);
  assert.match(text, new RegExp(`^updated webhook ${existing.id} `, 'm'));
  assert.equal(fake.webhooks().length, 6);
  assert.ok(fake.apiRequests().some((r) => r.path === '/v2/webhooks?limit=2&offset=4'));
});

test('sellsy connect reads a webhook list answered as a bare array', async () => {
  fake.webhookListShape = 'array';
  const existing = fake.putWebhook({ endpoint: ENDPOINT, sign_key: 'old' });
  const { code, text } = await connect(['--url', ENDPOINT]);
  assert.equal(code, 0, text);
  assert.match(text, new RegExp(`^updated webhook ${existing.id} `, 'm'));
  assert.equal(fake.webhooks().length, 1);
});

test('sellsy connect re-enables a disabled webhook and switches it to JSON', async () => {
  fake.putWebhook({ endpoint: ENDPOINT, is_enabled: false, json_content_type: false, sign_key: 'old' });
  assert.equal((await connect(['--url', ENDPOINT])).code, 0);
  const [webhook] = fake.webhooks();
  assert.equal(webhook?.is_enabled, true);
  assert.equal(webhook?.json_content_type, true);
});

test('sellsy connect exits 1 with Sellsy’s message when the API refuses', async () => {
  fake.failNext(1, 403);
  const { code, text } = await connect(['--url', ENDPOINT]);
  assert.equal(code, 1);
  assert.match(text, /^sellsy connect: Sellsy API GET \/webhooks\/events answered 403/);
});

test('sellsy connect exits 1 when Sellsy refuses the client credentials', async () => {
  const wrong = loadConfig({
    SELLSY_CLIENT_ID: fake.clientId,
    SELLSY_CLIENT_SECRET: 'wrong',
    SELLSY_API_URL: fake.apiUrl,
    SELLSY_TOKEN_URL: fake.tokenUrl,
  });
  const { code, text } = await connect(['--url', ENDPOINT], wrong);
  assert.equal(code, 1);
  assert.match(text, /Sellsy rejected the client credentials/);
  assert.doesNotMatch(text, /wrong/);
});

test('sellsy status shows nb_failures and last_failed, warns about failures, and never prints the sign key', async () => {
  const { id } = fake.putWebhook({
    endpoint: ENDPOINT,
    name: 'sellsy-webhooks',
    sign_key: 'very-secret-sign-key',
    json_content_type: true,
    configuration: INVOICE_EVENTS.map((id) => ({ id, is_enabled: true })),
    nb_failures: 3,
    last_failed: '2026-11-28T09:00:00+01:00',
    last_succeeded: '2026-11-27T18:00:00+01:00',
  });
  const { code, text, lines } = await status();
  assert.equal(code, 0, text);
  assert.ok(lines.includes('  nb_failures        3'), text);
  assert.ok(lines.includes('  last_failed        2026-11-28T09:00:00+01:00'), text);
  assert.ok(lines.includes('  last_succeeded     2026-11-27T18:00:00+01:00'), text);
  assert.ok(lines.includes('  events             3'), text);
  assert.ok(lines.includes(`  endpoint           ${ENDPOINT}`), text);
  assert.match(
    text,
    new RegExp(`^warning: webhook ${id} has 3 failed deliveries \\(last at 2026-11-28T09:00:00\\+01:00\\)`, 'm'),
  );
  assert.doesNotMatch(text, /very-secret-sign-key/);
  assert.doesNotMatch(text, /sign_key/);
});

test('sellsy status prints the backfill command for failed deliveries: the earliest last_failed minus the overlap', async () => {
  fake.putWebhook({ endpoint: ENDPOINT, nb_failures: 2, last_failed: '2026-11-28T09:00:00+01:00' });
  fake.putWebhook({
    endpoint: 'https://b.example.com/webhook/sellsy',
    nb_failures: 1,
    last_failed: '2026-11-29T10:00:00Z',
  });
  // A webhook without failures does not move the window, whatever its last_failed says.
  fake.putWebhook({
    endpoint: 'https://c.example.com/webhook/sellsy',
    nb_failures: 0,
    last_failed: '2026-11-01T00:00:00Z',
  });
  const { code, text, lines } = await status();
  assert.equal(code, 0, text);
  // RECONCILE_OVERLAP_SECONDS defaults to 300: five minutes before 08:00 UTC.
  assert.equal(lines.at(-1), 'sellsy-webhooks backfill --since 2026-11-28T07:55:00.000Z', text);
  const custom = loadConfig({
    SELLSY_CLIENT_ID: fake.clientId,
    SELLSY_CLIENT_SECRET: fake.clientSecret,
    SELLSY_API_URL: fake.apiUrl,
    SELLSY_TOKEN_URL: fake.tokenUrl,
    RECONCILE_OVERLAP_SECONDS: '0',
  });
  const only = await status('https://b.example.com/webhook/sellsy', custom);
  assert.equal(only.lines.at(-1), 'sellsy-webhooks backfill --since 2026-11-29T10:00:00.000Z', only.text);
});

test('sellsy status prints no backfill command without failures, and --since 24h when the failure has no time', async () => {
  fake.putWebhook({ endpoint: ENDPOINT });
  const clean = await status();
  assert.equal(clean.code, 0, clean.text);
  assert.doesNotMatch(clean.text, /backfill/);
  resetWebhooks(fake);
  fake.putWebhook({ endpoint: ENDPOINT, nb_failures: 1, last_failed: null });
  const undated = await status();
  assert.equal(undated.lines.at(-1), 'sellsy-webhooks backfill --since 24h', undated.text);
});

test('sellsy status never prints the key sellsy connect set', async () => {
  const connected = await connect(['--url', ENDPOINT]);
  const key = keyOf(connected.lines);
  const { code, text } = await status();
  assert.equal(code, 0, text);
  assert.ok(!text.includes(key));
  assert.doesNotMatch(text, /^warning/m, 'a fresh webhook has nothing to warn about');
});

test('sellsy status warns about a disabled webhook and one that posts form data', async () => {
  const { id } = fake.putWebhook({ endpoint: ENDPOINT, is_enabled: false, json_content_type: false });
  const { code, text } = await status();
  assert.equal(code, 0, text);
  assert.ok(text.includes(`\nwarning: webhook ${id} is disabled`), text);
  assert.ok(text.includes(`\nwarning: webhook ${id} posts form-encoded deliveries, not JSON`), text);
  assert.ok(text.includes(`\nwarning: webhook ${id} is subscribed to no event`), text);
});

test('sellsy status --url shows only the webhook posting there, and exits 1 when none does', async () => {
  fake.putWebhook({ endpoint: 'https://other.example.com/webhook/sellsy', name: 'other' });
  fake.putWebhook({ endpoint: ENDPOINT, name: 'mine' });
  const one = await status(ENDPOINT);
  assert.equal(one.code, 0, one.text);
  assert.match(one.text, /name {15}mine/);
  assert.doesNotMatch(one.text, /other/);
  const none = await status('https://nowhere.example.com/webhook/sellsy');
  assert.equal(none.code, 1);
  assert.match(none.text, /no Sellsy webhook posts to https:\/\/nowhere\.example\.com\/webhook\/sellsy/);
});

test('sellsy status with no webhook says how to create one', async () => {
  const { code, text } = await status();
  assert.equal(code, 0);
  assert.match(text, /no Sellsy webhook is configured; create one with: sellsy-webhooks sellsy connect/);
});

test('parseStatusArgs takes an optional --url', () => {
  assert.deepEqual(parseStatusArgs([]), { url: null });
  assert.deepEqual(parseStatusArgs(['--url', ENDPOINT]), { url: ENDPOINT });
  assert.match(String(parseStatusArgs(['--url', 'nope'])), /is not a URL/);
});
