/**
 * Sellsy's view of the webhooks posting to this service, exported by the workers (src/reconcile/webhook-watch.ts):
 * against the fake Sellsy and a private Redis, two workers share one read per interval and export the same figures.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { loadConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/logger.ts';
import { postsToThisService, startWebhookWatch } from '../../src/reconcile/webhook-watch.ts';
import { SellsyApi } from '../../src/sellsy/api.ts';
import { startWorker } from '../../src/worker/worker.ts';
import { type FakeSellsy, fakeApiOptions, sellsyError, startFakeSellsy } from '../helpers/fake-sellsy.ts';
import { LogCapture } from '../helpers/listener.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

let redis: RedisServer;
let fake: FakeSellsy;
const clients: Redis[] = [];
before(async () => {
  redis = await startRedis();
  fake = await startFakeSellsy();
});
after(async () => {
  for (const c of clients) c.disconnect();
  await fake?.close();
  await redis?.destroy();
});

const silent = () => createLogger('silent', new LogCapture());

/** A metric's value for a webhook id (or the unlabelled one), undefined when absent. */
async function value(registry: Registry, name: string, webhook?: string): Promise<number | undefined> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const values = (metric?.values ?? []) as { value: number; labels: Record<string, unknown> }[];
  return values.find((v) => webhook === undefined || String(v.labels.webhook) === webhook)?.value;
}

const webhookReads = () => fake.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/v2/webhooks')).length;

test('postsToThisService: the listener paths on any host, nothing else', () => {
  assert.equal(postsToThisService('https://hooks.example.com/webhook/sellsy'), true);
  assert.equal(postsToThisService('https://hooks.example.com/webhook/sellsy/acme_2'), true);
  assert.equal(postsToThisService('https://hooks.example.com/other/hook'), false);
  assert.equal(postsToThisService('https://hooks.example.com/webhook/sellsy/a/b'), false);
  assert.equal(postsToThisService(null), false);
});

test('two watchers read Sellsy once per interval and both export enabled, nb_failures and the last failure', async () => {
  fake.clearWebhooks();
  const mine = fake.putWebhook({
    endpoint: 'https://hooks.example.com/webhook/sellsy',
    is_enabled: true,
    nb_failures: 4,
    last_failed: '2026-11-28T09:00:00+01:00',
  });
  const other = fake.putWebhook({ endpoint: 'https://elsewhere.example.com/hook', is_enabled: false });
  const keyPrefix = `bull:test-${randomBytes(4).toString('hex')}`;
  const registries = [new Registry(), new Registry()];
  const intervalMs = 1500;
  fake.requests.length = 0;
  const watches = registries.map((registry) => {
    const client = new Redis(redis.url);
    clients.push(client);
    return startWebhookWatch({
      client,
      readers: [{ account: null, api: new SellsyApi(fakeApiOptions(fake)) }],
      keyPrefix,
      registry,
      log: silent(),
      intervalMs,
    });
  });
  const started = Date.now();
  try {
    const id = String(mine.id);
    for (const registry of registries) {
      await waitFor(
        async () => (await value(registry, 'sellsy_webhooks_sellsy_webhook_failures', id)) === 4,
        5000,
        'both export the failures',
      );
      assert.equal(await value(registry, 'sellsy_webhooks_sellsy_webhook_enabled', id), 1);
      assert.equal(
        await value(registry, 'sellsy_webhooks_sellsy_webhook_last_failure_timestamp_seconds', id),
        Date.parse('2026-11-28T08:00:00Z') / 1000,
      );
      // A webhook posting elsewhere is not this service's.
      assert.equal(await value(registry, 'sellsy_webhooks_sellsy_webhook_enabled', String(other.id)), undefined);
    }
    // Sellsy disables the endpoint and counts more failures: both export it within an interval or so.
    fake.putWebhook({ ...mine, is_enabled: false, nb_failures: 9 });
    for (const registry of registries) {
      await waitFor(
        async () => (await value(registry, 'sellsy_webhooks_sellsy_webhook_enabled', id)) === 0,
        3 * intervalMs,
        'both export the disabled endpoint',
      );
      assert.equal(await value(registry, 'sellsy_webhooks_sellsy_webhook_failures', id), 9);
    }
    // One read per interval across both processes, not one per process (+1: the interval running now).
    const intervals = Math.ceil((Date.now() - started) / intervalMs);
    assert.ok(webhookReads() <= intervals + 1, `${webhookReads()} reads in ${intervals} intervals`);
    assert.ok(webhookReads() >= 2, 'read again after the first interval');
  } finally {
    for (const w of watches) w.close();
  }
});

test('a worker with API credentials and a registry exports the view; without a registry no worker reads it', async () => {
  fake.clearWebhooks();
  const hook = fake.putWebhook({ endpoint: 'https://hooks.example.com/webhook/sellsy/929', nb_failures: 2 });
  const env = {
    REDIS_URL: redis.url,
    QUEUE_NAME: `test-${randomBytes(4).toString('hex')}`,
    SELLSY_CLIENT_ID: fake.clientId,
    SELLSY_CLIENT_SECRET: fake.clientSecret,
    SELLSY_API_URL: fake.apiUrl,
    SELLSY_TOKEN_URL: fake.tokenUrl,
    RECORD_ORDER: 'off',
  };
  const registry = new Registry();
  const worker = await startWorker(loadConfig(env), silent(), { registry, webhookWatchIntervalMs: 1000 });
  try {
    await waitFor(
      async () => (await value(registry, 'sellsy_webhooks_sellsy_webhook_failures', String(hook.id))) === 2,
      5000,
      'the worker exports the failures',
    );
    assert.ok(((await value(registry, 'sellsy_webhooks_sellsy_webhook_view_timestamp_seconds')) ?? 0) > 0);
  } finally {
    await worker.close();
  }
  // Without a registry (or credentials) nothing reads Sellsy's webhooks.
  const bare = await startWorker(loadConfig({ ...env, QUEUE_NAME: `${env.QUEUE_NAME}-b` }), silent(), {
    webhookWatchIntervalMs: 200,
  });
  fake.requests.length = 0;
  await new Promise((r) => setTimeout(r, 600));
  await bare.close();
  assert.equal(webhookReads(), 0);
});

test('with SELLSY_ACCOUNT_CREDENTIALS alone each account is read with its own client; a failing one keeps its last read for 3 intervals, then its series go', async () => {
  // A fake of its own: its webhook list answers per account (by the token's credentials), which the shared one does not.
  const own = await startFakeSellsy();
  const accounts = {
    '111': own.addAccount('client-111', 'secret-111'),
    '222': own.addAccount('client-222', 'secret-222'),
  };
  own.route('GET', /^\/v2\/webhooks$/, ({ token }) => {
    if (own.objectsOf('broken', token).length > 0) return sellsyError(503, 'unavailable');
    return { status: 200, body: own.objectsOf('hooks', token) };
  });
  accounts['111'].put('hooks', '7', {
    id: 7,
    endpoint: 'https://h.example.com/webhook/sellsy/111',
    is_enabled: true,
    nb_failures: 1,
  });
  accounts['222'].put('hooks', '8', {
    id: 8,
    endpoint: 'https://h.example.com/webhook/sellsy/222',
    is_enabled: false,
    nb_failures: 5,
  });
  const env = {
    REDIS_URL: redis.url,
    QUEUE_NAME: `test-${randomBytes(4).toString('hex')}`,
    SELLSY_ACCOUNT_CREDENTIALS: JSON.stringify({
      '111': { clientId: 'client-111', clientSecret: 'secret-111' },
      '222': { clientId: 'client-222', clientSecret: 'secret-222' },
    }),
    SELLSY_API_URL: own.apiUrl,
    SELLSY_TOKEN_URL: own.tokenUrl,
    RECORD_ORDER: 'off',
  };
  const registry = new Registry();
  const labelled = async (name: string, account: string) => {
    const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
    const values = (metric?.values ?? []) as { value: number; labels: Record<string, unknown> }[];
    return values.find((v) => v.labels.account === account)?.value;
  };
  const worker = await startWorker(loadConfig(env), silent(), { registry, webhookWatchIntervalMs: 600 });
  try {
    await waitFor(
      async () => (await labelled('sellsy_webhooks_sellsy_webhook_failures', '222')) === 5,
      5000,
      "account 222's webhook exported",
    );
    assert.equal(await labelled('sellsy_webhooks_sellsy_webhook_failures', '111'), 1);
    assert.equal(await labelled('sellsy_webhooks_sellsy_webhook_enabled', '111'), 1);
    assert.equal(await labelled('sellsy_webhooks_sellsy_webhook_enabled', '222'), 0);
    // Account 222's reads fail from now on; account 111's go on and show its new count, 222 keeps its last one.
    accounts['222'].put('broken', '1', { yes: true });
    accounts['111'].put('hooks', '7', {
      id: 7,
      endpoint: 'https://h.example.com/webhook/sellsy/111?token=s3cr3t',
      is_enabled: true,
      nb_failures: 3,
    });
    const failed = () => own.requests.filter((r) => r.path === '/v2/webhooks').length;
    const before = failed();
    await waitFor(
      async () => (await labelled('sellsy_webhooks_sellsy_webhook_failures', '111')) === 3,
      5000,
      "account 111's new count exported",
    );
    assert.ok(failed() > before);
    assert.equal(await labelled('sellsy_webhooks_sellsy_webhook_failures', '222'), 5);
    assert.equal(await labelled('sellsy_webhooks_sellsy_webhook_enabled', '222'), 0);
    // A query string (a token, maybe) never becomes a label.
    assert.ok(!(await registry.metrics()).includes('s3cr3t'));
    const lastRead222 = await labelled('sellsy_webhooks_sellsy_webhook_view_timestamp_seconds', '222');
    // Still failing 3 intervals after its last read: its series go rather than look current; 111's stay.
    await waitFor(
      async () => (await labelled('sellsy_webhooks_sellsy_webhook_enabled', '222')) === undefined,
      6 * 600,
      "account 222's series gone",
    );
    assert.equal(await labelled('sellsy_webhooks_sellsy_webhook_failures', '111'), 3);
    assert.equal(await labelled('sellsy_webhooks_sellsy_webhook_view_timestamp_seconds', '222'), undefined);
    assert.ok(
      ((await labelled('sellsy_webhooks_sellsy_webhook_view_timestamp_seconds', '111')) ?? 0) > (lastRead222 ?? 0),
    );
  } finally {
    await worker.close();
    await own.close();
  }
});
