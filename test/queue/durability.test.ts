import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  type DurabilityReport,
  type DurabilitySettings,
  durabilityFindings,
  guaranteeOf,
  inspectDurability,
  parseInfo,
} from '../../src/queue/durability.ts';
import { assertRedisServerAvailable, freePort, RedisServer, startRedis } from '../helpers/redis-server.ts';

const servers: RedisServer[] = [];
/** The sentences the listener logs when it connects. */
const warningsOf = (report: DurabilityReport) => report.findings.flatMap((f) => f.warning ?? []);
after(async () => {
  for (const s of servers) await s.destroy();
});

test('a Redis with AOF and noeviction gets no warning', async () => {
  const redis = await startRedis();
  servers.push(redis);
  const client = redis.client();
  try {
    const report = await inspectDurability(client);
    assert.equal(report.settings.aofEnabled, true);
    assert.equal(report.settings.appendfsync, 'everysec');
    assert.equal(report.settings.maxmemoryPolicy, 'noeviction');
    assert.deepEqual(warningsOf(report), []);
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
    assert.equal(report.settings.aofEnabled, false);
    assert.equal(warningsOf(report).length, 2);
    assert.match(warningsOf(report)[0] ?? '', /maxmemory-policy is "allkeys-lru".*Set maxmemory-policy noeviction/);
    assert.match(warningsOf(report)[1] ?? '', /AOF is off.*Set appendonly yes/);
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
    assert.deepEqual(warningsOf(report), []);
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
    assert.equal(warningsOf(report).length, 1);
    assert.match(warningsOf(report)[0] ?? '', /appendfsync is "no"/);
    assert.match(report.guarantee, /recent jobs may be lost \(appendfsync no\)/);
  } finally {
    client.disconnect();
  }
});

// --- the findings, judged from settings alone (no Redis) -----------------------------------------------------------

const safe: DurabilitySettings = {
  version: '7.2.4',
  aofEnabled: true,
  appendfsync: 'everysec',
  maxmemoryPolicy: 'noeviction',
};
const codes = (settings: Partial<DurabilitySettings>) =>
  durabilityFindings({ ...safe, ...settings }).map((f) => `${f.subject} ${f.level} ${f.code}`);

test('noeviction with AOF and appendfsync everysec gives two ok findings and nothing to log', () => {
  const findings = durabilityFindings(safe);
  assert.deepEqual(codes({}), ['eviction ok noeviction', 'aof ok appendfsync-everysec']);
  assert.ok(findings.every((f) => f.fix === undefined && f.warning === undefined));
  assert.deepEqual(findings[1]?.figures, { aofEnabled: true, appendfsync: 'everysec' });
});

test('an eviction policy fails, with its figure, its fix and the warning the listener logs', () => {
  const [eviction] = durabilityFindings({ ...safe, maxmemoryPolicy: 'volatile-lru' });
  assert.equal(eviction?.level, 'fail');
  assert.equal(eviction?.code, 'eviction');
  assert.deepEqual(eviction?.figures, { maxmemoryPolicy: 'volatile-lru' });
  assert.match(eviction?.message ?? '', /^maxmemory-policy volatile-lru: .*deletes keys, queued jobs included$/);
  assert.match(eviction?.fix ?? '', /^set maxmemory-policy noeviction/);
  assert.match(
    eviction?.warning ?? '',
    /^Redis maxmemory-policy is "volatile-lru": .*Set maxmemory-policy noeviction\.$/,
  );
});

test('AOF off is a warning, whatever appendfsync says', () => {
  assert.deepEqual(codes({ aofEnabled: false, appendfsync: 'always' }), ['eviction ok noeviction', 'aof warn aof-off']);
  const aof = durabilityFindings({ ...safe, aofEnabled: false })[1];
  assert.deepEqual(aof?.figures, { aofEnabled: false });
  assert.match(aof?.warning ?? '', /AOF is off.*Set appendonly yes/);
});

test('appendfsync no is a warning; always is ok; a value CONFIG GET could not read is ok but unknown', () => {
  assert.deepEqual(codes({ appendfsync: 'no' })[1], 'aof warn appendfsync-no');
  assert.deepEqual(codes({ appendfsync: 'always' })[1], 'aof ok appendfsync-always');
  const unknown = durabilityFindings({ ...safe, appendfsync: null })[1];
  assert.equal(unknown?.code, 'appendfsync-unknown');
  assert.match(unknown?.message ?? '', /appendfsync unknown: CONFIG GET is not allowed/);
});

test('settings INFO does not show are warnings for doctor, never start-up warnings', () => {
  const findings = durabilityFindings({ version: null, aofEnabled: null, appendfsync: null, maxmemoryPolicy: null });
  assert.deepEqual(
    findings.map((f) => `${f.level} ${f.code}`),
    ['warn eviction-unknown', 'warn aof-unknown'],
  );
  assert.ok(findings.every((f) => f.fix !== undefined && f.warning === undefined));
});

test('the guarantee follows REDIS_WAIT_AOF first, then AOF, then appendfsync', () => {
  assert.match(guaranteeOf({ aofEnabled: false, appendfsync: null }, true), /on Redis's disk before the 200/);
  assert.match(guaranteeOf({ aofEnabled: false, appendfsync: 'always' }, false), /not a Redis restart \(AOF off\)/);
  assert.match(
    guaranteeOf({ aofEnabled: true, appendfsync: 'always' }, false),
    /and a power loss \(appendfsync always\)/,
  );
  assert.match(guaranteeOf({ aofEnabled: true, appendfsync: null }, false), /\(appendfsync unknown\)$/);
});

test('parseInfo reads field:value lines, CRLF or not, and skips section headers', () => {
  const info = parseInfo(
    '# Server\r\nredis_version:7.2.4\r\nvalkey_version:8.0.1\r\n\r\n# Persistence\r\naof_enabled:1\n',
  );
  assert.equal(info.get('redis_version'), '7.2.4');
  assert.equal(info.get('valkey_version'), '8.0.1');
  assert.equal(info.get('aof_enabled'), '1');
  assert.equal(info.has('# Server'), false);
  assert.equal(info.size, 3);
});
