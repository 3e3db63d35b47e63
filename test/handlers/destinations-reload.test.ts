/**
 * Reload of DESTINATIONS_FILE while workers run (docs/destinations.md, "Reload"): through the command
 * `destinations reload` (Redis pub/sub), through SIGUSR2 on a real `work` process, and a bad file refused with the
 * old destinations kept. A private redis-server, a real listener and worker, HTTP receivers on loopback, each request
 * checked with the `standardwebhooks` library against its destination's secret.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { Webhook } from 'standardwebhooks';
import { loadConfig } from '../../src/config/config.ts';
import { createLogger } from '../../src/logger.ts';
import { reloadChannel } from '../../src/queue/reload-channel.ts';
import { startWorker } from '../../src/worker/worker.ts';
import { spawnCli } from '../helpers/cli.ts';
import { runDispatch } from '../helpers/dispatch.ts';
import { LogCapture, post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { usePrivateRedis } from '../helpers/private-redis.ts';
import { answerWith, type Receiver, startReceiver } from '../helpers/receiver.ts';
import { startCluster, startSentinelGroup } from '../helpers/redis-server.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, startTestWorker, type TestWorker } from '../helpers/worker.ts';

const tempDir = useTempDirs('sellsy-reload-');
const secrets = {
  A_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
  B_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
  C_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
};

const { redis, cleanup } = usePrivateRedis();

interface Spec {
  name: string;
  receiver: Receiver;
  secret: keyof typeof secrets | 'UNSET_SECRET';
  events?: string[];
  /** More lines of the entry, as written in the file. */
  extra?: string[];
}

function yamlOf(specs: Spec[]): string {
  const lines = ['destinations:'];
  for (const d of specs) {
    lines.push(`  - name: ${d.name}`, `    url: ${d.receiver.url}`, `    secret: \${${d.secret}}`);
    if (d.events) lines.push(`    events: ${JSON.stringify(d.events)}`);
    for (const line of d.extra ?? []) lines.push(`    ${line}`);
  }
  return `${lines.join('\n')}\n`;
}

async function receiver(): Promise<Receiver> {
  const r = await startReceiver();
  cleanup.push(() => r.close());
  return r;
}

interface Setup {
  listener: TestListener;
  worker: TestWorker;
  registry: Registry;
  file: string;
}

async function setup(specs: Spec[]): Promise<Setup> {
  const listener = await startTestListener(redis.url, { JOB_BACKOFF_MS: '20' });
  cleanup.push(() => listener.close());
  await untilReady(listener);
  const file = join(tempDir(), 'destinations.yaml');
  writeFileSync(file, yamlOf(specs));
  const registry = new Registry();
  const worker = await startTestWorker(listener, { ...secrets, DESTINATIONS_FILE: file }, undefined, registry);
  cleanup.push(() => worker.close());
  return { listener, worker, registry, file };
}

function body(type: string, id: number): string {
  return JSON.stringify({ eventType: 'x', event: 'created', relatedtype: type, relatedid: String(id), corpid: '929' });
}

async function deliver(listener: TestListener, text: string): Promise<string> {
  const res = await post(listener.url, text, json);
  assert.equal(res.status, 200);
  return res.body.jobId as string;
}

async function settled(listener: TestListener, jobId: string, state: 'completed' | 'failed') {
  await waitFor(async () => (await listener.queue.getJobState(jobId)) === state, 20_000, `job ${jobId} ${state}`);
  const job = await listener.queue.getJob(jobId);
  assert.ok(job);
  return job;
}

/** The event types a receiver got, each request verified with `secret` (throws if one does not verify). */
function typesAt(target: Receiver, secret: string): string[] {
  return target.received.map((r) => {
    const headers = Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, String(v)]));
    return (new Webhook(secret).verify(r.body, headers) as { type: string }).type;
  });
}

async function reloads(registry: Registry, result: 'ok' | 'refused'): Promise<number | null> {
  const text = await registry.metrics();
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`sellsy_webhooks_destinations_reloads_total{result="${result}"}`));
  return line === undefined ? null : Number(line.split(' ').pop());
}

/** Waits until `count` processes listen on the queue's reload channel. */
async function untilListening(listener: TestListener, count: number): Promise<void> {
  const client = new Redis(redis.url);
  try {
    const channel = reloadChannel(listener.config);
    await waitFor(
      async () => {
        const answer = (await client.pubsub('NUMSUB', channel)) as [string, number];
        return Number(answer[1]) === count;
      },
      10_000,
      `${count} listener(s) on ${channel}`,
    );
  } finally {
    client.disconnect();
  }
}

const commandEnv = (listener: TestListener) => ({
  REDIS_URL: redis.url,
  QUEUE_NAME: listener.config.queueName,
  SPOOL_DIR: tempDir(),
});

test('destinations reload switches a running worker to the new file; a job in flight finishes with the list it started with', async () => {
  const a = await receiver();
  const b = await receiver();
  const c = await receiver();
  const held: ServerResponse[] = [];
  a.answer = (res) => held.push(res);
  const { listener, worker, registry, file } = await setup([
    { name: 'a', receiver: a, secret: 'A_SECRET' },
    { name: 'b', receiver: b, secret: 'B_SECRET' },
  ]);
  const first = await deliver(listener, body('invoice', 1));
  await waitFor(() => held.length === 1 && b.received.length === 1, 10_000, 'the first event at a (held) and b');

  writeFileSync(
    file,
    yamlOf([
      { name: 'b', receiver: b, secret: 'B_SECRET' },
      { name: 'c', receiver: c, secret: 'C_SECRET' },
    ]),
  );
  await untilListening(listener, 1);
  const command = await runDispatch(['destinations', 'reload'], commandEnv(listener));
  assert.equal(command.status, 0, command.stderr);
  assert.match(command.stdout, /reload sent to 1 worker process;/);
  await waitFor(() => worker.logs.some((l) => l.msg?.toString().startsWith('destinations reloaded')), 10_000, 'reload');
  const log = worker.logs.find((l) => l.msg?.toString().startsWith('destinations reloaded'));
  assert.deepEqual(log?.destinations, ['b', 'c']);
  assert.deepEqual(log?.added, ['c']);
  assert.deepEqual(log?.removed, ['a']);
  assert.match(String(log?.origin), /^command \(from /);

  // The job in flight keeps its list: a takes it once the answer comes, c never sees it.
  held[0]?.end();
  await settled(listener, first, 'completed');
  assert.equal(a.received.length, 1);
  assert.equal(c.received.length, 0);

  const second = await deliver(listener, body('company', 2));
  await settled(listener, second, 'completed');
  assert.deepEqual(typesAt(a, secrets.A_SECRET), ['invoice.created'], 'the removed destination gets nothing new');
  assert.deepEqual(typesAt(b, secrets.B_SECRET), ['invoice.created', 'company.created']);
  assert.deepEqual(typesAt(c, secrets.C_SECRET), ['company.created'], 'the added destination at once');
  assert.equal(await reloads(registry, 'ok'), 1);
  assert.equal(await reloads(registry, 'refused'), 0);
  assert.match(await registry.metrics(), /sellsy_webhooks_destination_sent_total\{destination="c"\} 1/);
});

test('a reload with a bad file keeps the old one: refused, logged at error level naming the mistake, counted', async () => {
  const a = await receiver();
  const b = await receiver();
  const { listener, worker, registry, file } = await setup([
    { name: 'a', receiver: a, secret: 'A_SECRET', events: ['invoice.*'] },
    { name: 'b', receiver: b, secret: 'B_SECRET' },
  ]);
  const bad: [string, RegExp][] = [
    ['destinations: [\n  - name: a\n', /is not valid YAML/],
    [yamlOf([{ name: 'a', receiver: a, secret: 'UNSET_SECRET' }]), /UNSET_SECRET, which is not set/],
    [
      `${yamlOf([{ name: 'a', receiver: a, secret: 'A_SECRET' }])}  - name: b\n    url: ftp://b.internal/\n    secret: \${B_SECRET}\n`,
      /destination 2 \(b\): "url" must be an http/,
    ],
  ];
  for (const [text, problem] of bad) {
    writeFileSync(file, text);
    const outcome = worker.reloadDestinations('test');
    assert.equal(outcome?.result, 'refused');
    assert.ok(outcome?.result === 'refused' && outcome.problems.some((p) => problem.test(p)), String(problem));
    const logged = worker.logs.at(-1);
    assert.equal(logged?.level, 50);
    assert.match(String(logged?.msg), /^destinations reload refused, the destinations in use are kept: /);
    assert.match(String(logged?.msg), problem);
  }
  // Through the command too: the worker hears it and refuses the file on disk.
  await untilListening(listener, 1);
  const command = await runDispatch(['destinations', 'reload'], commandEnv(listener));
  assert.equal(command.status, 0, command.stderr);
  await waitFor(async () => (await reloads(registry, 'refused')) === 4, 10_000, 'the fourth refusal counted');
  assert.equal(await reloads(registry, 'ok'), 0);

  const id = await deliver(listener, body('invoice', 3));
  const other = await deliver(listener, body('company', 4));
  await settled(listener, id, 'completed');
  await settled(listener, other, 'completed');
  assert.deepEqual(typesAt(a, secrets.A_SECRET), ['invoice.created'], 'the old filter still applies');
  assert.deepEqual(typesAt(b, secrets.B_SECRET).sort(), ['company.created', 'invoice.created']);
});

test('a reload may add the first destination taking `unknown` jobs: they reach it from then on', async () => {
  const a = await receiver();
  const u = await receiver();
  const { listener, worker, file } = await setup([{ name: 'a', receiver: a, secret: 'A_SECRET', events: ['*'] }]);
  const notSellsy = JSON.stringify({ hello: 'not a Sellsy event' });
  const before = await settled(listener, await deliver(listener, notSellsy), 'failed');
  assert.match(before.failedReason, /no handler for "unknown"/);

  writeFileSync(
    file,
    yamlOf([
      { name: 'a', receiver: a, secret: 'A_SECRET', events: ['*'] },
      { name: 'u', receiver: u, secret: 'C_SECRET', events: ['unknown'] },
    ]),
  );
  assert.equal(worker.reloadDestinations('test')?.result, 'ok');
  await settled(listener, await deliver(listener, JSON.stringify({ hello: 'again' })), 'completed');
  assert.deepEqual(typesAt(u, secrets.C_SECRET), ['unknown']);
  assert.equal(a.received.length, 0);
});

test('a destination removed by a reload while its breaker is open no longer exports an open breaker', async () => {
  const down = await startReceiver(answerWith(503));
  cleanup.push(() => down.close());
  const up = await receiver();
  const { listener, worker, registry, file } = await setup([
    { name: 'a', receiver: down, secret: 'A_SECRET' },
    { name: 'b', receiver: up, secret: 'B_SECRET' },
  ]);
  // One failure opens a's breaker.
  const breakerAfterOne = ['breaker_failures: 1', 'breaker_probe_seconds: 3600'];
  writeFileSync(
    file,
    yamlOf([
      { name: 'a', receiver: down, secret: 'A_SECRET', extra: breakerAfterOne },
      { name: 'b', receiver: up, secret: 'B_SECRET' },
    ]),
  );
  assert.equal(worker.reloadDestinations('test')?.result, 'ok');
  const openA = async () =>
    /sellsy_webhooks_destination_breaker_open\{destination="a"\} (\d)/.exec(await registry.metrics())?.[1];
  await deliver(listener, body('invoice', 1));
  await waitFor(async () => (await openA()) === '1', 15_000, "a's breaker open");
  writeFileSync(file, yamlOf([{ name: 'b', receiver: up, secret: 'B_SECRET' }]));
  assert.deepEqual(worker.reloadDestinations('test'), {
    result: 'ok',
    destinations: ['b'],
    added: [],
    removed: ['a'],
    changed: [],
  });
  assert.equal(await openA(), undefined);
  assert.match(await registry.metrics(), /sellsy_webhooks_destination_breaker_open\{destination="b"\} 0/);
});

test('a worker started with FORWARD_URL has nothing to reload and says so', async () => {
  const listener = await startTestListener(redis.url);
  cleanup.push(() => listener.close());
  const target = await receiver();
  const worker = await startTestWorker(listener, { FORWARD_URL: target.url, FORWARD_SECRET: secrets.A_SECRET });
  cleanup.push(() => worker.close());
  assert.equal(worker.reloadDestinations('test'), null);
  assert.match(String(worker.logs.at(-1)?.msg), /FORWARD_URL, which is read at start only; nothing to reload/);
  const command = await runDispatch(['destinations', 'reload'], commandEnv(listener));
  assert.equal(command.status, 1);
  assert.match(command.stderr, /no worker process listens on /);
});

test('SIGUSR2 makes a `work` process read its file again (a bad one refused), and SIGHUP still stops it', async () => {
  const a = await receiver();
  const b = await receiver();
  const listener = await startTestListener(redis.url, { JOB_BACKOFF_MS: '20' });
  cleanup.push(() => listener.close());
  await untilReady(listener);
  const file = join(tempDir(), 'destinations.yaml');
  writeFileSync(file, yamlOf([{ name: 'a', receiver: a, secret: 'A_SECRET' }]));
  const work = spawnCli(['work'], {
    ...commandEnv(listener),
    ...secrets,
    DESTINATIONS_FILE: file,
    LOG_LEVEL: 'info',
  });
  cleanup.push(async () => {
    if (work.child.exitCode === null) work.child.kill('SIGKILL');
  });
  const lines = () => work.stdout.map((l) => JSON.parse(l) as Record<string, unknown>);
  const logged = (msg: RegExp) => lines().filter((l) => msg.test(String(l.msg)));
  await waitFor(() => logged(/^worker started$/).length === 1, 30_000, 'worker started');

  writeFileSync(file, yamlOf([{ name: 'b', receiver: b, secret: 'B_SECRET' }]));
  work.child.kill('SIGUSR2');
  await waitFor(() => logged(/^destinations reloaded/).length === 1, 10_000, 'reloaded');
  assert.equal(logged(/^destinations reloaded/)[0]?.origin, 'SIGUSR2');

  writeFileSync(file, yamlOf([{ name: 'a', receiver: a, secret: 'UNSET_SECRET' }]));
  work.child.kill('SIGUSR2');
  await waitFor(() => logged(/^destinations reload refused/).length === 1, 10_000, 'refused');
  assert.equal(logged(/^destinations reload refused/)[0]?.level, 50);
  assert.equal(work.child.exitCode, null, 'SIGUSR2 does not stop the service');

  const id = await deliver(listener, body('invoice', 5));
  await settled(listener, id, 'completed');
  assert.deepEqual(typesAt(b, secrets.B_SECRET), ['invoice.created'], 'the last good file applies');
  assert.equal(a.received.length, 0);

  work.child.kill('SIGHUP');
  assert.equal(await work.exited, 0);
  assert.equal(logged(/^shutting down/)[0]?.signal, 'SIGHUP');
});

test('SIGUSR2 while a `work` process is still starting does not end it: the reload runs once it has started', async () => {
  const a = await receiver();
  const listener = await startTestListener(redis.url, { JOB_BACKOFF_MS: '20' });
  cleanup.push(() => listener.close());
  await untilReady(listener);
  const dir = tempDir();
  const file = join(dir, 'destinations.yaml');
  writeFileSync(file, yamlOf([{ name: 'a', receiver: a, secret: 'A_SECRET' }]));
  // A handler module that takes seconds to load, and says when it starts: the worker's start lasts that long.
  const handlers = join(dir, 'slow-handlers.mjs');
  const loading = join(dir, 'loading');
  writeFileSync(
    handlers,
    `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(loading)}, '');\n` +
      'await new Promise((r) => setTimeout(r, 3000));\nexport default {};\n',
  );
  const work = spawnCli(['work'], {
    ...commandEnv(listener),
    ...secrets,
    DESTINATIONS_FILE: file,
    HANDLERS: handlers,
    LOG_LEVEL: 'info',
  });
  cleanup.push(async () => {
    if (work.child.exitCode === null) work.child.kill('SIGKILL');
  });
  const lines = () => work.stdout.map((l) => JSON.parse(l) as Record<string, unknown>);
  const logged = (msg: RegExp) => lines().filter((l) => msg.test(String(l.msg)));
  await waitFor(() => existsSync(loading), 30_000, 'the handler module loading');
  assert.equal(logged(/^worker started$/).length, 0, 'still starting');
  work.child.kill('SIGUSR2');
  await waitFor(() => logged(/^destinations reloaded/).length === 1, 30_000, 'reloaded once started');
  assert.equal(logged(/^destinations reloaded/)[0]?.origin, 'SIGUSR2 (while starting)');
  assert.equal(work.child.exitCode, null);
  work.child.kill('SIGTERM');
  assert.equal(await work.exited, 0);
});

test('destinations check lists a good file without its secrets, and names every mistake of a bad one', async () => {
  const a = await receiver();
  const good = join(tempDir(), 'good.yaml');
  writeFileSync(good, yamlOf([{ name: 'a', receiver: a, secret: 'A_SECRET', events: ['invoice.*'] }]));
  const ok = await runDispatch(['destinations', 'check', good], { ...secrets });
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(
    ok.stdout,
    /: 1 destination, ok\n {2}a {2}http:\/\/127\.0\.0\.1:\d+\/hooks\/sellsy {2}events invoice\.\* {2}timeout 10000 ms/,
  );
  assert.ok(!ok.stdout.includes(secrets.A_SECRET.slice(6)), 'no secret printed');

  const bad = join(tempDir(), 'bad.yaml');
  writeFileSync(bad, yamlOf([{ name: 'a', receiver: a, secret: 'UNSET_SECRET' }]));
  const refused = await runDispatch(['destinations', 'check', bad], { ...secrets });
  assert.equal(refused.status, 1);
  assert.match(
    refused.stderr,
    /would be refused:\n {2}- DESTINATIONS_FILE: destination 1 \(a\): .*UNSET_SECRET, which is not set/,
  );

  // Without FILE: the one DESTINATIONS_FILE names.
  const configured = await runDispatch(['destinations', 'check'], { ...secrets, DESTINATIONS_FILE: good });
  assert.equal(configured.status, 0, configured.stderr);
  // The configured file being wrong is what check is for: 1 and its mistakes, not a configuration error at start;
  // and another file can be checked meanwhile.
  const configuredBad = await runDispatch(['destinations', 'check'], { ...secrets, DESTINATIONS_FILE: bad });
  assert.equal(configuredBad.status, 1, configuredBad.stderr);
  assert.match(configuredBad.stderr, /would be refused:\n {2}- DESTINATIONS_FILE: destination 1 \(a\)/);
  const other = await runDispatch(['destinations', 'check', good], { ...secrets, DESTINATIONS_FILE: bad });
  assert.equal(other.status, 0, other.stderr);
  const none = await runDispatch(['destinations', 'check'], {});
  assert.equal(none.status, 2);
  assert.match(none.stderr, /give a FILE, or set DESTINATIONS_FILE/);
  assert.equal((await runDispatch(['destinations', 'check', good, 'extra'], {})).status, 2);
  assert.equal((await runDispatch(['destinations', 'restart'], {})).status, 2);
});

test('on a Redis Cluster the command reaches the workers whatever node they listen on, and counts them all', async () => {
  const cluster = await startCluster();
  cleanup.push(() => cluster.destroy());
  const a = await receiver();
  const b = await receiver();
  const file = join(tempDir(), 'destinations.yaml');
  writeFileSync(file, yamlOf([{ name: 'a', receiver: a, secret: 'A_SECRET' }]));
  const env = {
    REDIS_CLUSTER_NODES: cluster.seedsEnv,
    QUEUE_NAME: 'reload-cluster',
    ...secrets,
    DESTINATIONS_FILE: file,
  };
  const workers: { logs: Record<string, unknown>[] }[] = [];
  for (let i = 0; i < 3; i++) {
    const capture = new LogCapture();
    const worker = await startWorker(loadConfig(env), createLogger('info', capture), { env });
    cleanup.push(() => worker.close());
    workers.push({ logs: capture.lines });
  }
  const client = new Redis.Cluster(cluster.seeds);
  cleanup.push(async () => client.disconnect());
  await new Promise((resolve) => client.once('ready', resolve));
  const channel = '{bull}:reload-cluster:destinations:reload';
  const listening = async () => {
    let sum = 0;
    for (const node of client.nodes('all'))
      sum += Number(((await node.pubsub('NUMSUB', channel)) as [string, number])[1]);
    return sum;
  };
  await waitFor(async () => (await listening()) === 3, 20_000, 'three workers listening');

  writeFileSync(file, yamlOf([{ name: 'b', receiver: b, secret: 'B_SECRET' }]));
  const command = await runDispatch(['destinations', 'reload'], {
    REDIS_CLUSTER_NODES: cluster.seedsEnv,
    QUEUE_NAME: 'reload-cluster',
    SPOOL_DIR: tempDir(),
  });
  assert.equal(command.status, 0, command.stderr);
  assert.match(command.stdout, /reload sent to 3 worker processes;/);
  for (const w of workers) {
    await waitFor(() => w.logs.some((l) => String(l.msg).startsWith('destinations reloaded')), 10_000, 'each reloads');
  }
});

test('through Sentinel the command reaches the worker, and again after kill -9 of the master', async () => {
  const group = await startSentinelGroup();
  cleanup.push(() => group.destroy());
  const a = await receiver();
  const file = join(tempDir(), 'destinations.yaml');
  writeFileSync(file, yamlOf([{ name: 'a', receiver: a, secret: 'A_SECRET' }]));
  const redisEnv = {
    REDIS_SENTINELS: group.sentinelsEnv,
    REDIS_SENTINEL_MASTER: group.masterName,
    QUEUE_NAME: 'reload-sentinel',
  };
  const env = { ...redisEnv, ...secrets, DESTINATIONS_FILE: file };
  const capture = new LogCapture();
  const worker = await startWorker(loadConfig(env), createLogger('info', capture), { env });
  cleanup.push(() => worker.close());
  const reloaded = () => capture.lines.filter((l) => String(l.msg).startsWith('destinations reloaded')).length;
  /** The command, once the master of the moment has the worker's subscription. */
  const reload = async () => {
    const master = await group.master();
    const client = new Redis(master.port);
    try {
      await waitFor(
        async () =>
          Number(
            ((await client.pubsub('NUMSUB', 'bull:reload-sentinel:destinations:reload')) as [string, number])[1],
          ) === 1,
        30_000,
        `the worker listening on the master :${master.port}`,
      );
    } finally {
      client.disconnect();
    }
    return runDispatch(['destinations', 'reload'], { ...redisEnv, SPOOL_DIR: tempDir() });
  };

  const first = await reload();
  assert.equal(first.status, 0, first.stderr);
  assert.match(first.stdout, /reload sent to 1 worker process;/);
  await waitFor(() => reloaded() === 1, 10_000, 'the first reload');

  await group.killMaster();
  const second = await reload();
  assert.equal(second.status, 0, second.stderr);
  assert.match(second.stdout, /reload sent to 1 worker process;/);
  await waitFor(() => reloaded() === 2, 10_000, 'the reload after the failover');
});
