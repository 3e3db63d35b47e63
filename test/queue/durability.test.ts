import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { inspectDurability } from '../../src/queue/durability.ts';
import { assertRedisServerAvailable, freePort, RedisServer, startRedis } from '../helpers/redis-server.ts';

const servers: RedisServer[] = [];
after(async () => {
  for (const s of servers) await s.destroy();
});

test('a Redis with AOF and noeviction gets no warning', async () => {
  const redis = await startRedis();
  servers.push(redis);
  const client = redis.client();
  try {
    const report = await inspectDurability(client);
    assert.equal(report.aofEnabled, true);
    assert.equal(report.appendfsync, 'everysec');
    assert.equal(report.maxmemoryPolicy, 'noeviction');
    assert.deepEqual(report.warnings, []);
    assert.match(report.guarantee, /survives a Redis crash; a power loss .* may lose the last second/);
    const strict = await inspectDurability(client, true);
    assert.match(strict.guarantee, /on Redis's disk before the 200 \(REDIS_WAIT_AOF\).*survives .* a power loss/);
  } finally {
    client.disconnect();
  }
});

test('an evicting Redis without AOF gets one warning for each risk, with the fix', async () => {
  assertRedisServerAvailable();
  const redis = new RedisServer(await freePort(), ['--appendonly', 'no', '--maxmemory-policy', 'allkeys-lru']);
  servers.push(redis);
  await redis.start();
  const client = redis.client();
  try {
    const report = await inspectDurability(client);
    assert.equal(report.aofEnabled, false);
    assert.equal(report.warnings.length, 2);
    assert.match(report.warnings[0] ?? '', /maxmemory-policy is "allkeys-lru".*Set maxmemory-policy noeviction/);
    assert.match(report.warnings[1] ?? '', /AOF is off.*Set appendonly yes/);
  } finally {
    client.disconnect();
  }
});

test('appendfsync always is reported as surviving a power loss', async () => {
  const redis = await startRedis(['--appendfsync', 'always']);
  servers.push(redis);
  const client = redis.client();
  try {
    const report = await inspectDurability(client);
    assert.deepEqual(report.warnings, []);
    assert.match(report.guarantee, /survives a Redis crash and a power loss \(appendfsync always\)/);
  } finally {
    client.disconnect();
  }
});

test('appendfsync no is reported', async () => {
  const redis = await startRedis(['--appendfsync', 'no']);
  servers.push(redis);
  const client = redis.client();
  try {
    const report = await inspectDurability(client);
    assert.equal(report.warnings.length, 1);
    assert.match(report.warnings[0] ?? '', /appendfsync is "no"/);
    assert.match(report.guarantee, /recent jobs may be lost \(appendfsync no\)/);
  } finally {
    client.disconnect();
  }
});
