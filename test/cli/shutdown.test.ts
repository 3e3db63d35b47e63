/**
 * Graceful shutdown of the real process without a spool (SPOOL_MAX_BYTES=0): SIGTERM while requests wait on a frozen
 * Redis; every one of them is answered 200 with its job queued once Redis answers again, and the process exits 0.
 * (With the spool they are answered at once: test/spool/.)
 */

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import { httpOk, spawnCli, waitFor } from '../helpers/cli.ts';
import { freePort, type RedisServer, startRedis } from '../helpers/redis-server.ts';

let redis: RedisServer | undefined;
after(async () => {
  await redis?.destroy();
});

test('SIGTERM during in-flight enqueues loses no request and exits 0', async () => {
  redis = await startRedis();
  const port = await freePort();
  const queueName = 'shutdown-test';
  const cli = spawnCli(['listen'], {
    PORT: String(port),
    HOST: '127.0.0.1',
    REDIS_URL: redis.url,
    QUEUE_NAME: queueName,
    ENQUEUE_TIMEOUT_MS: '10000',
    SPOOL_MAX_BYTES: '0',
    SHUTDOWN_TIMEOUT_MS: '15000',
  });
  try {
    const base = `http://127.0.0.1:${port}`;
    await waitFor(() => httpOk(`${base}/readyz`), 20_000, 'the listener to be ready');

    redis.freeze();
    const inFlight = Array.from({ length: 20 }, (_, i) =>
      fetch(`${base}/webhook/sellsy`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: `{"relatedtype":"invoice","event":"created","relatedid":"${i}"}`,
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> })),
    );
    await new Promise((r) => setTimeout(r, 300));
    cli.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    // Stopped accepting: a new connection is refused while the in-flight ones are still waiting.
    await assert.rejects(fetch(`${base}/healthz`));
    redis.thaw();

    const results = await Promise.all(inFlight);
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.body.ok, true);
      assert.equal(r.body.queued, undefined);
    }
    const code = await cli.exited;
    if (code !== 0) console.error(cli.stdout.join('\n'));
    assert.equal(code, 0);
    assert.ok(cli.stdout.some((line) => JSON.parse(line).msg === 'stopped'));

    const queue = new Queue(queueName, { connection: { url: redis.url } });
    try {
      const counts = await queue.getJobCounts('waiting');
      assert.equal(counts.waiting, 20);
    } finally {
      await queue.close();
    }
  } finally {
    redis.thaw();
    if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
  }
});
