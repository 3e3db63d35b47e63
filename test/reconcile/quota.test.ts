/**
 * RECONCILE_QUOTA_SHARE: a reconcile run (periodic or backfill) spends at most that share of the per-minute quota
 * Sellsy says is left, then waits for the next minute. Minutes are shortened to 1 s so the test takes seconds.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { loadConfig } from '../../src/config/config.ts';
import type { WebhookJobData } from '../../src/queue/contract.ts';
import { BullmqProducer } from '../../src/queue/producer.ts';
import { producerOptionsFrom } from '../../src/queue/producer-options.ts';
import { RecordSeen } from '../../src/queue/seen.ts';
import { reconcile } from '../../src/reconcile/reconcile.ts';
import { ReconcileState } from '../../src/reconcile/state.ts';
import { SellsyApi } from '../../src/sellsy/api.ts';
import { type FakeSellsy, fakeApiOptions, startFakeSellsy } from '../helpers/fake-sellsy.ts';
import { type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';

let redis: RedisServer;
let fake: FakeSellsy;
before(async () => {
  redis = await startRedis();
  fake = await startFakeSellsy();
});
after(async () => {
  await fake?.close();
  await redis?.destroy();
});

test('with 10 calls left per minute and a share of 0.5, a run makes at most 5 calls a minute and waits for the next', async () => {
  const config = loadConfig({
    REDIS_URL: redis.url,
    QUEUE_NAME: `test-${randomBytes(4).toString('hex')}`,
    RECONCILE_QUOTA_SHARE: '0.5',
  });
  const producer = new BullmqProducer({ ...producerOptionsFrom(config), role: 'reconcile' });
  const queue = new Queue<WebhookJobData>(config.queueName, { connection: { url: redis.url } });
  try {
    await waitFor(() => producer.health().ready, 10_000, 'producer ready');
    fake.quota.byMinute = 10;
    // 1,150 changed companies: 12 pages of 100, the last one short.
    for (let id = 1; id <= 1150; id++) {
      fake.put('companies', String(id), { id, updated_at: new Date(Date.now() - 60_000 - id).toISOString() });
    }
    const minuteMs = 1000;
    const startedAt = Date.now();
    const [tally] = await reconcile(
      {
        accounts: [{ account: '929', api: new SellsyApi(fakeApiOptions(fake)) }],
        writer: producer,
        state: new ReconcileState(producer.client, config.queuePrefix, config.queueName),
        seen: RecordSeen.of(producer.client, config.queuePrefix, config.queueName),
        quotaShare: config.reconcile.quotaShare,
        minuteMs,
      },
      {
        since: Date.now() - 3_600_000,
        until: Date.now(),
        lookbackMs: 0,
        types: ['companies'],
        dryRun: false,
        backfill: true,
      },
    );
    assert.equal(tally?.queued, 1150, 'every change queued');
    const calls = fake.apiRequests().filter((r) => r.path.startsWith('/v2/companies/search'));
    assert.equal(calls.length, 12);
    const perMinute = new Map<number, number>();
    for (const c of calls) {
      const minute = Math.floor(c.at / minuteMs);
      perMinute.set(minute, (perMinute.get(minute) ?? 0) + 1);
    }
    // Counted where the fake received them: a call sent in the last instant of a minute (counted there by the run)
    // may arrive in the next one, so a minute may show one more. Without the share all 12 would go in one minute.
    assert.ok(
      [...perMinute.values()].every((n) => n <= 6),
      `at most 5 calls per minute, one of them maybe late: ${JSON.stringify([...perMinute.values()])}`,
    );
    assert.ok(perMinute.size >= 3, `12 calls at 5 a minute span 3 minutes (${perMinute.size})`);
    assert.ok(
      Date.now() - startedAt >= minuteMs,
      'the run waited for the next minutes (3 minutes started: more than one elapsed)',
    );
    assert.equal(await queue.count(), 1150);
  } finally {
    await producer.close();
    await queue.close();
  }
});
