import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { post, startTestListener, untilReady } from '../helpers/listener.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, recordBody, startTestWorker } from '../helpers/worker.ts';

let redis: RedisServer | undefined;
after(async () => {
  await redis?.destroy();
});

test('a running worker resumes by itself after Redis is killed and restarted', async () => {
  redis = await startRedis(['--appendonly', 'yes', '--appendfsync', 'always']);
  const server = redis;
  const listener = await startTestListener(server.url);
  await untilReady(listener);
  const handled: string[] = [];
  const worker = await startTestWorker(
    listener,
    {},
    {
      '*': async (event) => {
        handled.push(event?.relatedId ?? '');
      },
    },
  );
  try {
    assert.equal((await post(listener.url, recordBody('before', 1), json)).status, 200);
    await waitFor(() => handled.includes('before'), 10_000, 'the first job was handled');

    await server.kill();
    // Restarted once the worker has seen the outage: a restart before that would not test the reconnection.
    const sawOutage = () => worker.logs.some((l) => l.msg === 'worker connection error');
    await waitFor(sawOutage, 10_000, 'the worker to see the outage');
    await server.start();
    await untilReady(listener);

    const res = await post(listener.url, recordBody('after', 1), json);
    assert.equal(res.status, 200);
    await waitFor(() => handled.includes('after'), 20_000, 'a job queued after the restart was handled');
    assert.equal(await listener.queue.getJobState(res.body.jobId as string), 'completed');
    assert.ok(
      worker.logs.some((l) => l.msg === 'worker connection error'),
      'the worker saw the outage (so the test did cut it off)',
    );
  } finally {
    await worker.close();
    await listener.close();
  }
});
