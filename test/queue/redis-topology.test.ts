/**
 * The Sentinel group and Cluster launchers of the tests (benchmarks/lib/redis-topology.ts), against real processes:
 * they start healthy, name the right master, and their failovers keep replicated data and let a client find it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import {
  assertRedisServerAvailable,
  type RedisServer,
  startCluster,
  startSentinelGroup,
} from '../helpers/redis-server.ts';

/** One command on a short-lived connection to `node`. */
async function ask(node: RedisServer, ...args: (string | number)[]): Promise<unknown> {
  const client = node.client();
  try {
    return await client.call(String(args[0]), ...args.slice(1));
  } finally {
    client.disconnect();
  }
}

const ports = (nodes: RedisServer[]) => nodes.map((n) => n.port).sort();

test('a Sentinel group keeps a replicated key across a Sentinel failover, a kill -9 of the master and a restart', async (t) => {
  assertRedisServerAvailable();
  const group = await startSentinelGroup();
  t.after(() => group.destroy());
  assert.equal(group.masterName, 'mymaster');
  assert.equal(group.sentinels.length, 3);
  assert.equal(group.sentinelsEnv, group.sentinels.map((s) => `127.0.0.1:${s.port}`).join(','));
  const first = await group.master();
  assert.equal(first, group.nodes[0]);
  assert.deepEqual(ports(await group.replicas()), ports(group.nodes.slice(1)));
  await ask(first, 'SET', 'key', 'before-failover');
  assert.equal(await ask(first, 'WAIT', 2, 5_000), 2);

  const second = await group.failover();
  assert.notEqual(second, first);
  assert.equal(await group.master(), second);
  assert.equal(((await ask(second, 'ROLE')) as unknown[])[0], 'master');
  assert.equal(await ask(second, 'GET', 'key'), 'before-failover');
  const viaSentinels = new Redis({ sentinels: group.sentinels, name: group.masterName, maxRetriesPerRequest: 1 });
  viaSentinels.on('error', () => undefined);
  try {
    assert.equal(await viaSentinels.get('key'), 'before-failover');
    assert.deepEqual(await viaSentinels.call('CONFIG', 'GET', 'port'), ['port', String(second.port)]);
  } finally {
    viaSentinels.disconnect();
  }

  await ask(second, 'SET', 'key', 'before-kill');
  assert.ok(Number(await ask(second, 'WAIT', 1, 5_000)) >= 1);
  const third = await group.killMaster();
  assert.equal(second.process, null);
  assert.ok(third !== second && third.process !== null);
  assert.equal(await group.master(), third);
  assert.equal(await ask(third, 'GET', 'key'), 'before-kill');

  await group.restart(second);
  assert.ok((await group.replicas()).includes(second));
  const info = String(await ask(second, 'INFO', 'replication'));
  assert.match(info, /role:slave/);
  assert.match(info, new RegExp(`master_port:${third.port}\\r\\n`));
  assert.equal(await ask(second, 'GET', 'key'), 'before-kill');
});

test('a Cluster routes keys of different slots to the masters masterOf names, and fails one over to its replica', async (t) => {
  assertRedisServerAvailable();
  const cluster = await startCluster();
  t.after(() => cluster.destroy());
  assert.equal(cluster.nodes.length, 6);
  assert.equal(cluster.seedsEnv, cluster.seeds.map((s) => `127.0.0.1:${s.port}`).join(','));
  const masters = await cluster.masters();
  assert.equal(masters.length, 3);
  const client = new Cluster(cluster.seeds);
  t.after(() => client.disconnect());

  // Slots 15495, 3300 and 7365: one in each third of the slot space, so one key on each master.
  const keys = ['a', 'b', 'c'];
  for (const key of keys) await client.set(key, `value of ${key}`);
  const owners: RedisServer[] = [];
  for (const key of keys) {
    assert.equal(await client.get(key), `value of ${key}`);
    const owner = await cluster.masterOf(key);
    assert.ok(masters.includes(owner));
    owners.push(owner);
    const slot = Number(await ask(owner, 'CLUSTER', 'KEYSLOT', key));
    assert.equal(await ask(owner, 'GET', key), `value of ${key}`, `${owner.port} serves slot ${slot}`);
    const other = masters.find((m) => m !== owner) as RedisServer;
    await assert.rejects(ask(other, 'GET', key), new RegExp(`MOVED ${slot} 127\\.0\\.0\\.1:${owner.port}`));
  }
  assert.equal(new Set(owners).size, 3, 'the three keys live on three masters');

  const old = owners[0] as RedisServer;
  await ask(old, 'SET', 'a', 'replicated');
  assert.ok(Number(await ask(old, 'WAIT', 1, 5_000)) >= 1);
  const replicasOfOld: RedisServer[] = [];
  for (const node of cluster.nodes) {
    if (String(await ask(node, 'INFO', 'replication')).includes(`master_port:${old.port}\r\n`))
      replicasOfOld.push(node);
  }
  assert.equal(replicasOfOld.length, 1);
  const promoted = await cluster.killMasterOf('a');
  assert.equal(old.process, null);
  assert.equal(promoted, replicasOfOld[0]);
  assert.equal(await cluster.masterOf('a'), promoted);
  assert.equal(await client.get('a'), 'replicated');
  assert.equal(await client.get('b'), 'value of b');
});
