import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Queue, Worker } from 'bullmq';
import { doctor } from '../../src/cli/doctor.ts';
import { loadConfig } from '../../src/config/config.ts';
import { encodeEntry, inboxKeys } from '../../src/queue/inbox.ts';
import { jobOptionsOf } from '../../src/queue/producer-options.ts';
import { Spool } from '../../src/spool/spool.ts';
import { tempSpoolDir } from '../helpers/cli.ts';
import { startFakeSellsy } from '../helpers/fake-sellsy.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { testDatabaseUrl } from '../helpers/postgres.ts';
import { freePort, type RedisServer, startRedis, startValkey } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

let good: RedisServer;
let misconfigured: RedisServer;
before(async () => {
  [good, misconfigured] = await Promise.all([
    startRedis(),
    startRedis(['--maxmemory-policy', 'allkeys-lru', '--appendonly', 'no']),
  ]);
});
after(async () => {
  await Promise.all([good?.destroy(), misconfigured?.destroy()]);
});

const jobs = { attempts: 1, backoffMs: 1000, keepCompletedSeconds: 3600, keepFailedSeconds: 3600 };
const WHSEC = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;

interface Run {
  code: number;
  lines: string[];
  ms: number;
  /** The line of a check and its `fix:` line (undefined for ok). */
  check(name: string): { line: string; fix: string | undefined };
}

async function runDoctor(env: Record<string, string>, options: { color?: boolean } = {}): Promise<Run> {
  const config = loadConfig({
    REDIS_URL: good.url,
    QUEUE_NAME: `doctor-${randomUUID().slice(0, 8)}`,
    SPOOL_DIR: tempSpoolDir(),
    ...env,
  });
  const lines: string[] = [];
  const started = Date.now();
  const code = await doctor(config, (line) => lines.push(line), options);
  return {
    code,
    lines,
    ms: Date.now() - started,
    check(name) {
      const i = lines.findIndex((l) => new RegExp(`^(ok|warn|fail) +${name}: `).test(l));
      assert.ok(i >= 0, `no "${name}" line in:\n${lines.join('\n')}`);
      const next = lines[i + 1];
      return { line: lines[i] ?? '', fix: next?.startsWith('      fix: ') ? next : undefined };
    },
  };
}

test('doctor fails an evicting Redis and warns that AOF is off, each with its fix, and returns 1', async () => {
  const run = await runDoctor({ REDIS_URL: misconfigured.url });
  const eviction = run.check('redis eviction');
  assert.match(eviction.line, /^fail {2}redis eviction: maxmemory-policy allkeys-lru: .*deletes keys, queued jobs/);
  assert.match(eviction.fix ?? '', /fix: set maxmemory-policy noeviction/);
  const aof = run.check('redis aof');
  assert.match(aof.line, /^warn {2}redis aof: appendonly no: a Redis restart loses/);
  assert.match(aof.fix ?? '', /fix: set appendonly yes/);
  assert.equal(run.code, 1);
});

test('doctor returns 0 against a Redis with AOF on and noeviction, every Redis check ok', async () => {
  const run = await runDoctor({ SELLSY_SIGN_KEY: 'sign-key-1' });
  const redisLines = run.lines.filter((l) => /^\S+ +redis[ :]/.test(l));
  assert.deepEqual(
    redisLines.map((l) => /^\S+ +(redis[^:]*):/.exec(l)?.slice(1)[0]),
    ['redis', 'redis version', 'redis eviction', 'redis aof', 'redis wait-aof', 'redis replicas'],
  );
  assert.match(run.check('redis replicas').line, /0 replicas connected/);
  for (const line of redisLines) assert.match(line, /^ok {4}/, line);
  assert.match(run.check('redis aof').line, /appendfsync everysec/);
  assert.ok(!run.lines.some((l) => l.startsWith('fail')), run.lines.join('\n'));
  assert.equal(run.code, 0);
});

test('doctor reports an unreachable Redis as a failed check, password masked, and returns 1 at once', async () => {
  const port = await freePort();
  const run = await runDoctor({ REDIS_URL: `redis://:hunter2hunter2@127.0.0.1:${port}` });
  const redis = run.check('redis');
  assert.match(
    redis.line,
    new RegExp(`^fail  redis: Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port} did not answer: `),
  );
  assert.match(redis.line, /ECONNREFUSED/);
  assert.ok(redis.fix);
  assert.ok(!run.lines.some((l) => /^\S+ +(redis eviction|dead letters|workers):/.test(l)), 'dependent checks skipped');
  assert.ok(!run.lines.join('\n').includes('hunter2'));
  assert.equal(run.code, 1);
  assert.ok(run.ms < 5000, `took ${run.ms} ms`);
});

test('doctor reports a frozen Redis within seconds instead of hanging', async () => {
  const frozen = await startRedis();
  frozen.freeze();
  try {
    const run = await runDoctor({ REDIS_URL: frozen.url });
    assert.match(run.check('redis').line, /^fail {2}redis: .* did not answer: no answer within 3 s/);
    assert.equal(run.code, 1);
    assert.ok(run.ms < 8000, `took ${run.ms} ms`);
  } finally {
    await frozen.destroy();
  }
});

test('doctor fails the spool check when SPOOL_DIR lies under a regular file', async () => {
  const file = join(tempSpoolDir(), 'a-file');
  writeFileSync(file, 'not a directory');
  const run = await runDoctor({ SPOOL_DIR: join(file, 'spool') });
  const spool = run.check('spool');
  assert.match(spool.line, /^fail {2}spool: .*a-file\/spool.* cannot be used: ENOTDIR/);
  assert.match(spool.fix ?? '', /SPOOL_DIR/);
  assert.equal(run.code, 1);
});

test('doctor warns that there is no spool when SPOOL_MAX_BYTES is 0', async () => {
  const run = await runDoctor({ SPOOL_MAX_BYTES: '0' });
  const spool = run.check('spool');
  assert.match(spool.line, /^warn {2}spool: off \(SPOOL_MAX_BYTES=0\), no spool/);
  assert.match(spool.fix ?? '', /set SPOOL_MAX_BYTES/);
  assert.ok(!run.lines.some((l) => /^\S+ +spool (disk|contents):/.test(l)));
});

test('doctor warns about deliveries waiting in the spool and names spool drain', async () => {
  const dir = tempSpoolDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 20 });
  for (let i = 0; i < 3; i++) await spool.append(jobFixture(i));
  await spool.close();
  const run = await runDoctor({ SPOOL_DIR: dir });
  const contents = run.check('spool contents');
  assert.match(
    contents.line,
    /^warn {2}spool contents: holds 3 deliveries .*oldest received 2026-01-01T00:00:00\.000Z/,
  );
  assert.match(contents.fix ?? '', /sellsy-webhooks spool drain/);
  assert.match(run.check('spool').line, /^ok {4}spool: .*writable/);
});

test('doctor warns when the spool disk has less free space than SPOOL_MAX_BYTES', async () => {
  const run = await runDoctor({ SPOOL_MAX_BYTES: String(2 ** 52) });
  const disk = run.check('spool disk');
  assert.match(disk.line, /^warn {2}spool disk: .* free on its file system; SPOOL_MAX_BYTES .*less free space/);
  assert.match(disk.fix ?? '', /lower SPOOL_MAX_BYTES/);
});

test('doctor warns about dead letters and points at replay', async () => {
  const queueName = `doctor-${randomUUID().slice(0, 8)}`;
  const queue = new Queue(queueName, { connection: { url: good.url } });
  const worker = new Worker(
    queueName,
    async () => {
      throw new Error('downstream refused\n    at somewhere');
    },
    { connection: { url: good.url, maxRetriesPerRequest: null } },
  );
  try {
    const { name, data } = jobFixture(1);
    await queue.add(name, data, { ...jobOptionsOf({ jobs: { ...jobs, attempts: 1 } }), jobId: data.deliveryId });
    await waitFor(async () => (await queue.getFailedCount()) === 1, 10_000, 'a dead letter');
    await worker.close();
    const run = await runDoctor({ QUEUE_NAME: queueName });
    const dead = run.check('dead letters');
    assert.match(
      dead.line,
      new RegExp(
        `^warn  dead letters: 1 in ${queueName}; newest invoice\\.step failed .*: downstream refused at somewhere$`,
      ),
    );
    assert.match(dead.fix ?? '', /sellsy-webhooks replay/);
    assert.match(run.check('workers').line, /^warn {2}workers: no worker connected/);
  } finally {
    await worker.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
});

test('doctor warns about acknowledged deliveries left in the inbox: none moving them, or a mover behind', async () => {
  const queueName = `doctor-${randomUUID().slice(0, 8)}`;
  const keys = inboxKeys('bull', queueName);
  const client = good.client();
  try {
    assert.equal(
      (await runDoctor({ QUEUE_NAME: queueName })).check('inbox').line,
      'ok    inbox: empty: every acknowledged delivery is a job',
    );
    const old = new Date(Date.now() - 300_000).toISOString();
    await client.rpush(keys.inbox, encodeEntry(jobFixture(1, old)), encodeEntry(jobFixture(2)));
    const stranded = (await runDoctor({ QUEUE_NAME: queueName })).check('inbox');
    assert.match(
      stranded.line,
      /^warn {2}inbox: 2 acknowledged deliveries not yet jobs, the oldest 5 min old; no listener is moving them$/,
    );
    assert.match(stranded.fix ?? '', /start a listener/);
    await client.set(keys.lease, 'a-mover', 'PX', 10_000);
    assert.match(
      (await runDoctor({ QUEUE_NAME: queueName })).check('inbox').line,
      /^warn {2}inbox: .*a listener's mover is on them but behind$/,
    );
    await client.del(keys.inbox);
    await client.rpush(keys.inbox, encodeEntry(jobFixture(3, new Date().toISOString())));
    assert.match(
      (await runDoctor({ QUEUE_NAME: queueName })).check('inbox').line,
      /^ok {4}inbox: 1 acknowledged deliveries not yet jobs, the oldest \d+ s old; a listener's mover is on them$/,
    );
  } finally {
    await client.del(keys.inbox, keys.lease);
    client.disconnect();
  }
});

test('doctor sees a connected worker', async () => {
  const queueName = `doctor-${randomUUID().slice(0, 8)}`;
  const queue = new Queue(queueName, { connection: { url: good.url } });
  const worker = new Worker(queueName, async () => undefined, {
    connection: { url: good.url, maxRetriesPerRequest: null },
  });
  try {
    await waitFor(async () => (await queue.getWorkersCount()) === 1, 10_000, 'the worker to connect');
    const run = await runDoctor({ QUEUE_NAME: queueName });
    assert.equal(run.check('workers').line, `ok    workers: 1 on ${queueName}`);
  } finally {
    await worker.close();
    await queue.close();
  }
});

test('doctor fails REDIS_WAIT_AOF when Redis has AOF off', async () => {
  const run = await runDoctor({ REDIS_URL: misconfigured.url, REDIS_WAIT_AOF: 'true' });
  const waitAof = run.check('redis wait-aof');
  assert.match(waitAof.line, /^fail {2}redis wait-aof: REDIS_WAIT_AOF=true needs (appendonly yes|WAITAOF)/);
  assert.match(waitAof.fix ?? '', /REDIS_WAIT_AOF=false/);
});

test('doctor accepts REDIS_WAIT_AOF on Valkey 8 with AOF on', async () => {
  const valkey = await startValkey();
  try {
    const run = await runDoctor({ REDIS_URL: valkey.url, REDIS_WAIT_AOF: 'true' });
    assert.match(run.check('redis version').line, /^ok {4}redis version: Valkey 8\./);
    assert.match(run.check('redis wait-aof').line, /^ok {4}redis wait-aof: on: /);
  } finally {
    await valkey.destroy();
  }
});

test("doctor fails with Sellsy's message when the token endpoint refuses the client credentials", async () => {
  const sellsy = await startFakeSellsy();
  try {
    const run = await runDoctor({
      SELLSY_CLIENT_ID: sellsy.clientId,
      SELLSY_CLIENT_SECRET: 'not-the-right-secret',
      SELLSY_API_URL: sellsy.apiUrl,
      SELLSY_TOKEN_URL: sellsy.tokenUrl,
    });
    const api = run.check('sellsy api');
    assert.match(
      api.line,
      /^fail {2}sellsy api: Sellsy rejected the client credentials .*401.*Client authentication failed/,
    );
    assert.match(api.fix ?? '', /SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET/);
    assert.equal(run.code, 1);
  } finally {
    await sellsy.close();
  }
});

test('doctor accepts Sellsy client credentials that obtain a token', async () => {
  const sellsy = await startFakeSellsy();
  try {
    const run = await runDoctor({
      SELLSY_CLIENT_ID: sellsy.clientId,
      SELLSY_CLIENT_SECRET: sellsy.clientSecret,
      SELLSY_API_URL: sellsy.apiUrl,
      SELLSY_TOKEN_URL: sellsy.tokenUrl,
    });
    assert.match(run.check('sellsy api').line, /^ok {4}sellsy api: client credentials accepted/);
    assert.equal(sellsy.tokenRequests().length, 1);
  } finally {
    await sellsy.close();
  }
});

test('doctor warns when Sellsy cannot be reached', async () => {
  const port = await freePort();
  const run = await runDoctor({
    SELLSY_CLIENT_ID: 'id',
    SELLSY_CLIENT_SECRET: 'secret',
    SELLSY_API_URL: `http://127.0.0.1:${port}/v2`,
    SELLSY_TOKEN_URL: `http://127.0.0.1:${port}/oauth2/access-tokens`,
  });
  assert.match(run.check('sellsy api').line, /^warn {2}sellsy api: no token: .*ECONNREFUSED/);
});

test('doctor is ok with any HTTP answer from FORWARD_URL', async () => {
  const server = createServer((_req, res) => res.writeHead(405).end());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const run = await runDoctor({ FORWARD_URL: `http://127.0.0.1:${port}/hooks/sellsy`, FORWARD_SECRET: WHSEC });
    assert.match(
      run.check('forward url').line,
      new RegExp(`^ok {4}forward url: http://127\\.0\\.0\\.1:${port}/… answered HEAD with 405`),
    );
  } finally {
    server.close();
  }
});

test('doctor checks each destination of DESTINATIONS_FILE: a line per destination, a warning naming the one down', async () => {
  const server = createServer((_req, res) => res.writeHead(405).end());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const downPort = await freePort();
  const file = join(tempSpoolDir(), 'destinations.yaml');
  writeFileSync(
    file,
    `destinations:
  - name: accounting
    url: http://127.0.0.1:${port}/hooks
    secret: \${S}
  - name: warehouse
    url: http://127.0.0.1:${downPort}/ingest
    secret: \${S}
`,
  );
  try {
    const run = await runDoctor({ DESTINATIONS_FILE: file, S: WHSEC });
    assert.match(run.check('destination accounting').line, /^ok {4}destination accounting: .* answered HEAD with 405/);
    const down = run.check('destination warehouse');
    assert.match(down.line, /^warn {2}destination warehouse: .* unreachable: .*ECONNREFUSED/);
    assert.match(down.fix ?? '', /replay --destination warehouse/);
    assert.ok(!run.lines.some((l) => / forward url: /.test(l)));
  } finally {
    server.close();
  }
});

test('doctor warns when FORWARD_URL does not answer', async () => {
  const port = await freePort();
  const run = await runDoctor({ FORWARD_URL: `http://127.0.0.1:${port}/hooks`, FORWARD_SECRET: WHSEC });
  const forward = run.check('forward url');
  assert.match(forward.line, /^warn {2}forward url: .* unreachable: .*ECONNREFUSED/);
  assert.match(forward.fix ?? '', /FORWARD_URL/);
});

test('doctor fails when DATABASE_URL points at no PostgreSQL', async () => {
  const port = await freePort();
  const run = await runDoctor({ DATABASE_URL: `postgres://app:pg-password-1@127.0.0.1:${port}/app` });
  const postgres = run.check('postgres');
  assert.match(
    postgres.line,
    new RegExp(`^fail  postgres: postgres://app:\\*\\*\\*@127\\.0\\.0\\.1:${port}/app did not answer: `),
  );
  assert.equal(run.code, 1);
});

test('doctor reaches the PostgreSQL of DATABASE_URL', async () => {
  const run = await runDoctor({ DATABASE_URL: testDatabaseUrl() });
  assert.match(run.check('postgres').line, /^ok {4}postgres: .* answers \(PostgreSQL \d+/);
});

test('doctor never prints a configured secret', async () => {
  const sellsy = await startFakeSellsy();
  const port = await freePort();
  const secrets = {
    SELLSY_SIGN_KEY: 'sign-key-never-shown',
    SELLSY_ACCOUNT_KEYS: JSON.stringify({ 929: 'account-key-never-shown' }),
    FORWARD_SECRET: WHSEC,
    SELLSY_CLIENT_SECRET: 'client-secret-never-shown',
    ADMIN_USER: 'admin',
    ADMIN_PASSWORD: 'admin-password-never-shown',
    ADMIN_TOKEN: 'admin-token-never-shown-0123456789',
  };
  try {
    const run = await runDoctor({
      ...secrets,
      REDIS_URL: `redis://:redis-password-never-shown@127.0.0.1:${port}`,
      DATABASE_URL: `postgres://app:db-password-never-shown@127.0.0.1:${port}/app`,
      FORWARD_URL: `http://127.0.0.1:${port}/hooks?token=forward-token-never-shown`,
      SELLSY_CLIENT_ID: sellsy.clientId,
      SELLSY_API_URL: sellsy.apiUrl,
      SELLSY_TOKEN_URL: sellsy.tokenUrl,
    });
    const text = run.lines.join('\n');
    for (const secret of [
      ...Object.values(secrets).filter((s) => s !== 'admin'),
      'account-key-never-shown',
      WHSEC.slice('whsec_'.length),
      'redis-password-never-shown',
      'db-password-never-shown',
      'forward-token-never-shown',
    ]) {
      assert.ok(!text.includes(secret), `${secret} printed in:\n${text}`);
    }
    assert.ok(!text.includes('never-shown'), text);
  } finally {
    await sellsy.close();
  }
});

test('doctor colours the status words only when asked', async () => {
  const plain = await runDoctor({});
  assert.ok(!plain.lines.join('\n').includes('\x1b['));
  const colored = await runDoctor({}, { color: true });
  assert.ok(
    colored.lines.some((l) => l.startsWith('\x1b[32mok  \x1b[0m  redis: ')),
    colored.lines.join('\n'),
  );
  assert.ok(colored.lines.some((l) => l.startsWith('\x1b[33mwarn\x1b[0m  signatures: ')));
});

test('doctor weighs the connected replicas against REDIS_WAIT_REPLICAS', async (t) => {
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(good.port)]);
  t.after(() => replica.destroy());
  const admin = good.client();
  t.after(() => admin.disconnect());
  await waitFor(async () => /slave0:.*state=online/.test(await admin.info('replication')), 10_000, 'the replica');

  const unused = await runDoctor({});
  assert.match(
    unused.check('redis replicas').line,
    /^warn {2}redis replicas: 1 replica connected, and REDIS_WAIT_REPLICAS=0/,
  );
  assert.match(unused.check('redis replicas').fix ?? '', /REDIS_WAIT_REPLICAS=1/);

  const waited = await runDoctor({ REDIS_WAIT_REPLICAS: '1' });
  assert.match(
    waited.check('redis replicas').line,
    /^ok {4}redis replicas: 1 replica connected; a 200 waits until 1 of them has/,
  );

  const missing = await runDoctor({ REDIS_WAIT_REPLICAS: '2' });
  assert.match(
    missing.check('redis replicas').line,
    /^fail {2}redis replicas: 1 replica connected, and REDIS_WAIT_REPLICAS=2: /,
  );
  assert.equal(missing.code, 1);
});
