/**
 * The connection factory, against a real Redis: each role's options reach the client and behave as promised
 * (its name in CLIENT LIST, the command deadline, no offline queue, blocking commands, the operator's deadline).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { loadConfig } from '../../src/config/config.ts';
import {
  type ConnectionRole,
  closeForGood,
  connectOrFail,
  createConnection as createClient,
  describeRedis,
  type RedisSettings,
  redisSettingsOf,
} from '../../src/queue/connection.ts';
import { freePort, type RedisServer, startRedis } from '../helpers/redis-server.ts';

/** On one server the factory makes a `Redis`: these tests look at its options and socket. */
const createConnection = (settings: RedisSettings, role: ConnectionRole) => createClient(settings, role) as Redis;
const standalone = (url: string): RedisSettings => ({ kind: 'standalone', url });

let redis: RedisServer;
let admin: Redis;
before(async () => {
  redis = await startRedis();
  admin = redis.client();
});
after(async () => {
  admin?.disconnect();
  await redis?.destroy();
});

async function ready(client: Redis): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve);
    client.once('end', () => reject(new Error('connection ended')));
  });
}

async function clientNames(): Promise<string[]> {
  const list = (await admin.call('CLIENT', 'LIST')) as string;
  return list
    .split('\n')
    .map((line) => /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '')
    .filter((name) => name !== '');
}

test('every role names its connection, as CLIENT LIST shows', async () => {
  const settings = standalone(redis.url);
  const roles: ConnectionRole[] = [
    { role: 'fail-fast', name: 'hooks:producer', commandTimeoutMs: 1000 },
    { role: 'worker', name: 'hooks:worker' },
    { role: 'dashboard', name: 'hooks:dashboard', commandTimeoutMs: 1000 },
  ];
  const clients = roles.map((role) => createConnection(settings, role));
  const operator = (await connectOrFail(loadConfig({ REDIS_URL: redis.url, QUEUE_NAME: 'hooks' }), 'doctor')) as Redis;
  try {
    await Promise.all(clients.map(ready));
    const names = await clientNames();
    for (const name of ['hooks:producer', 'hooks:worker', 'hooks:dashboard', 'hooks:doctor']) {
      assert.ok(names.includes(name), `${name} in ${names.join(', ')}`);
    }
  } finally {
    for (const client of [...clients, operator]) client.disconnect();
  }
});

test('a fail-fast connection gives up on a frozen Redis after its command timeout', async () => {
  const client = createConnection(standalone(redis.url), { role: 'fail-fast', name: 'frozen', commandTimeoutMs: 300 });
  client.on('error', () => undefined);
  try {
    await ready(client);
    redis.freeze();
    const started = Date.now();
    await assert.rejects(client.ping(), /Command timed out/);
    const waited = Date.now() - started;
    assert.ok(waited >= 250 && waited < 2000, `waited ${waited} ms`);
  } finally {
    redis.thaw();
    client.disconnect();
  }
});

test('a fail-fast connection rejects a command at once while Redis is unreachable, without retries', async () => {
  const client = createConnection(standalone(`redis://127.0.0.1:${await freePort()}`), {
    role: 'fail-fast',
    name: 'down',
    commandTimeoutMs: 5000,
  });
  client.on('error', () => undefined);
  try {
    assert.equal(client.options.maxRetriesPerRequest, 0);
    assert.equal(client.options.enableOfflineQueue, false);
    const started = Date.now();
    await assert.rejects(client.ping(), /enableOfflineQueue/);
    assert.ok(Date.now() - started < 1000);
  } finally {
    client.disconnect();
  }
});

test('a worker connection retries without limit, so blocking commands and BullMQ workers can use it', async () => {
  const client = createConnection(standalone(redis.url), { role: 'worker', name: 'blocking' });
  try {
    assert.equal(client.options.maxRetriesPerRequest, null);
    await ready(client);
    assert.equal(await client.blpop('connection-test:empty', 0.1), null);
    // BullMQ refuses a worker connection that would give up on a blocking command after some retries.
    const worker = new Worker('connection-test', async () => undefined, { connection: client, autorun: false });
    await worker.close();
  } finally {
    client.disconnect();
  }
});

test('closeForGood closes a connection and the copies BullMQ makes of it: none connects again, Redis up or away', async () => {
  // A disconnect alone is not final: BullMQ disconnects and connects a blocking connection again while it runs.
  const live = createConnection(standalone(redis.url), { role: 'worker', name: 'family-live' });
  const liveCopy = live.duplicate();
  try {
    await Promise.all([ready(live), ready(liveCopy)]);
    const ended = new Promise((resolve) => liveCopy.once('end', resolve));
    liveCopy.disconnect();
    await ended;
    await liveCopy.connect();
    assert.equal(await liveCopy.ping(), 'PONG', 'a copy connects again after a plain disconnect');
  } finally {
    closeForGood(live);
  }
  await assert.rejects(liveCopy.connect(), /Connection is closed/);

  // Redis unreachable: the copy is retrying when its family is closed; it stops, and a later connect() is refused.
  const away = createConnection(standalone(`redis://127.0.0.1:${await freePort()}`), { role: 'worker', name: 'away' });
  const awayCopy = away.duplicate();
  let errors = 0;
  for (const c of [away, awayCopy]) c.on('error', () => errors++);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.ok(errors > 0, 'both were retrying');
  closeForGood(away);
  await assert.rejects(awayCopy.connect(), /Connection is closed/);
  errors = 0;
  await new Promise((resolve) => setTimeout(resolve, 800));
  assert.equal(errors, 0, 'no attempt after the close');
  assert.deepEqual([live.status, liveCopy.status], ['end', 'end']);
});

test('a dashboard connection holds commands while it connects and bounds each answer', async () => {
  const client = createConnection(standalone(redis.url), {
    role: 'dashboard',
    name: 'dashboard',
    commandTimeoutMs: 1500,
  });
  try {
    assert.equal(client.options.commandTimeout, 1500);
    assert.equal(client.options.maxRetriesPerRequest, 1);
    // Sent before the connection is ready: queued, then answered.
    assert.equal(await client.ping(), 'PONG');
  } finally {
    client.disconnect();
  }
});

test('connectOrFail names the masked address when nothing answers, and never reconnects', async () => {
  const port = await freePort();
  const config = loadConfig({ REDIS_URL: `redis://:secret-password@127.0.0.1:${port}` });
  assert.equal(describeRedis(redisSettingsOf(config)), `redis://:***@127.0.0.1:${port}`);
  await assert.rejects(
    connectOrFail(config, 'stats', 1000),
    (err: Error) =>
      err.message.startsWith(`Redis at redis://:***@127.0.0.1:${port} did not answer: `) &&
      !err.message.includes('secret-password'),
  );
  const client = (await connectOrFail(loadConfig({ REDIS_URL: redis.url }), 'stats')) as Redis;
  try {
    assert.equal(client.options.retryStrategy?.(1), null);
  } finally {
    client.disconnect();
  }
});

test('connectOrFail gives up on a Redis that accepts the connection but never answers', async () => {
  redis.freeze();
  try {
    await assert.rejects(
      connectOrFail(loadConfig({ REDIS_URL: redis.url }), 'doctor', 300),
      /did not answer: no answer within 0.3 s/,
    );
  } finally {
    redis.thaw();
  }
});

test('a READONLY answer (a master demoted by a failover) makes a connection reconnect: fail-fast fails the command, a worker sends it again', async (t) => {
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(redis.port)]);
  t.after(() => replica.destroy());
  const failFast = createConnection(standalone(replica.url), {
    role: 'fail-fast',
    name: 'demoted',
    commandTimeoutMs: 1000,
  });
  failFast.on('error', () => undefined);
  t.after(() => failFast.disconnect());
  await ready(failFast);
  const reconnecting = new Promise((resolve) => failFast.once('reconnecting', resolve));
  await assert.rejects(failFast.set('connection-test:readonly', '1'), /READONLY/);
  await reconnecting;

  // A worker's command is sent again after the reconnection: once the node is a master, it succeeds.
  const worker = createConnection(standalone(replica.url), { role: 'worker', name: 'demoted-worker' });
  t.after(() => worker.disconnect());
  await ready(worker);
  const write = worker.set('connection-test:readonly', '2');
  await new Promise((resolve) => worker.once('reconnecting', resolve));
  const promote = replica.client();
  t.after(() => promote.disconnect());
  await promote.call('REPLICAOF', 'NO', 'ONE');
  assert.equal(await write, 'OK');
  assert.equal(await promote.get('connection-test:readonly'), '2');
});
