/**
 * Graceful shutdown of the real process without a spool (SPOOL_MAX_BYTES=0): SIGTERM while requests wait on a frozen
 * Redis; every one of them is answered 200 with its job queued once Redis answers again, and the process exits 0.
 * (With the spool they are answered at once: test/spool/.)
 */

import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { after, test } from 'node:test';
import { Queue } from 'bullmq';
import { httpOk, spawnCli } from '../helpers/cli.ts';
import { freePort, type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

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
    let sent = 0;
    const onSent = () => {
      sent++;
    };
    diagnostics.subscribe('undici:request:bodySent', onSent);
    const inFlight = Array.from({ length: 20 }, (_, i) =>
      fetch(`${base}/webhook/sellsy`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: `{"relatedtype":"invoice","event":"created","relatedid":"${i}"}`,
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> })),
    );
    await waitFor(() => sent === 20, 10_000, 'the 20 requests to be sent', 10);
    diagnostics.unsubscribe('undici:request:bodySent', onSent);
    // The listener has read the 20 before the signal comes (sent is not read: a connection whose request the
    // listener has not read yet is idle, and closed at shutdown; its sender gets no answer and sends again).
    const waiting = async () => {
      const text = await (await fetch(`${base}/metrics`)).text();
      return /^sellsy_webhooks_deliveries_waiting 20$/m.test(text);
    };
    await waitFor(waiting, 10_000, 'the listener to read the 20 requests', 10);
    cli.child.kill('SIGTERM');
    // Stopped accepting: a new connection is refused while the in-flight ones are still waiting.
    const refused = () =>
      fetch(`${base}/healthz`).then(
        () => false,
        () => true,
      );
    await waitFor(refused, 10_000, 'the listener to stop accepting connections');
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
