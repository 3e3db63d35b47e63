import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { parseReplayArgs, replay } from '../../src/cli/replay.ts';
import { PermanentError } from '../../src/errors.ts';
import { recordQueueName } from '../../src/queue/records.ts';
import { runDispatch } from '../helpers/dispatch.ts';
import { post, startTestListener, untilReady } from '../helpers/listener.ts';
import { freePort, type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, recordBody, startTestWorker } from '../helpers/worker.ts';

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.destroy();
});

test('replay with Redis unreachable exits 1 at once with the address, and a bad argument exits 2', async () => {
  const port = await freePort();
  const started = Date.now();
  const down = await runDispatch(['replay'], { REDIS_URL: `redis://:hunter2@127.0.0.1:${port}` });
  assert.equal(down.status, 1);
  assert.match(down.stderr, new RegExp(`replay: Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port} did not answer`));
  assert.ok(!down.stderr.includes('hunter2'), 'the password is not printed');
  assert.ok(Date.now() - started < 15_000);
  for (const args of [['--name', 'invoice'], ['--since', 'yesterday'], ['--bogus']]) {
    const bad = await runDispatch(['replay', ...args]);
    assert.equal(bad.status, 2, `${args.join(' ')}: ${bad.stderr}`);
    assert.match(bad.stderr, /^sellsy-webhooks replay: /);
  }
});

test('replay filters: --id, --name pattern and the failure time window select the dead letters', () => {
  const parsed = parseReplayArgs(['--id', 'a', '--id', 'b', '--name', 'invoice.*', '--since', '2026-11-28T09:00:00Z']);
  assert.ok(typeof parsed !== 'string');
  assert.deepEqual([...parsed.filter.ids], ['a', 'b']);
  assert.equal(parsed.filter.name, 'invoice.*');
  assert.equal(parsed.filter.since, Date.UTC(2026, 10, 28, 9));
  assert.equal(parsed.filter.until, null);
  assert.equal(parsed.dryRun, false);
});

test('a dead letter of the record queue is replayed as a new record job, and --name leaves other jobs alone', async () => {
  const listener = await startTestListener(redis.url, { JOB_ATTEMPTS: '1' });
  await untilReady(listener);
  let fixed = false;
  const handled: string[] = [];
  const worker = await startTestWorker(
    listener,
    { RECORD_ORDER: 'latest' },
    {
      '*': async (event) => {
        if (!fixed) throw new PermanentError('downstream refused');
        handled.push(`${event?.relatedType}.${event?.relatedId}`);
      },
    },
  );
  const records = new Queue(recordQueueName(listener.config.queueName), { connection: { url: redis.url } });
  try {
    await post(listener.url, recordBody('77', 1), json);
    await post(listener.url, JSON.stringify({ relatedtype: 'third', event: 'updated', relatedid: '5' }), json);
    await waitFor(async () => (await records.getFailedCount()) === 2, 15_000, 'two record dead letters');

    const lines: string[] = [];
    const dry = await replay(
      listener.config,
      { ids: new Set(), name: 'invoice.*', since: null, until: null },
      true,
      (l) => lines.push(l),
    );
    assert.deepEqual(dry, { matched: 1, replayed: 0, skipped: 0 });
    assert.match(
      lines[0] ?? '',
      /^would replay .*-records .* invoice\.step failed .* after 1 attempts: \[user \*\] downstream refused$/,
    );

    fixed = true;
    const done = await replay(
      listener.config,
      { ids: new Set(), name: 'invoice.*', since: null, until: null },
      false,
      () => undefined,
    );
    assert.deepEqual(done, { matched: 1, replayed: 1, skipped: 0 });
    await waitFor(() => handled.includes('invoice.77'), 15_000, 'the replayed record job ran');
    assert.equal(
      await records.getFailedCount(),
      1,
      'the third.updated dead letter is still there; the replayed one is gone',
    );
    assert.deepEqual(handled, ['invoice.77']);
  } finally {
    await worker.close();
    await records.close();
    await listener.close();
  }
});
