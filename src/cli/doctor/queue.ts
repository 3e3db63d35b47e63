/**
 * Queue checks: `inbox` (acknowledged deliveries not yet jobs, and whether a listener's mover is moving them),
 * `dead letters` (failed jobs, newest first) and `workers` (connected BullMQ workers), on the main
 * queue and on the per-record queue when it is in use.
 */
import { Queue } from 'bullmq';
import type { Config } from '../../config/config.ts';
import type { RedisClient } from '../../queue/connection.ts';
import { inboxKeys, inboxState } from '../../queue/inbox.ts';
import { recordQueueInUse, recordQueueName } from '../../queue/records.ts';
import { formatAge, oneLine } from '../format.ts';
import { type CheckResult, describe, ok, warn } from './check.ts';

export async function queueChecks(config: Config, client: RedisClient): Promise<CheckResult[]> {
  const names = [config.queueName];
  if (await recordQueueInUse(config, client)) names.push(recordQueueName(config.queueName));
  const queues = names.map((name) => new Queue(name, { connection: client, prefix: config.queuePrefix }));
  for (const queue of queues) queue.on('error', () => undefined);
  try {
    const results: CheckResult[] = [await inboxCheck(config, client)];
    const failed = await Promise.all(queues.map((q) => q.getFailedCount()));
    const total = failed.reduce((a, b) => a + b, 0);
    if (total === 0) {
      results.push(ok('dead letters', `none (${names.join(', ')})`));
    } else {
      const counts = names.map((name, i) => `${failed[i]} in ${name}`).join(', ');
      const newest = (await Promise.all(queues.map((q) => q.getFailed(0, 0))))
        .flat()
        .sort((a, b) => (b.finishedOn ?? 0) - (a.finishedOn ?? 0))[0];
      const last = newest
        ? `; newest ${newest.name} failed ${newest.finishedOn ? new Date(newest.finishedOn).toISOString() : '?'}: ${oneLine(newest.failedReason ?? '', 120)}`
        : '';
      results.push(
        warn(
          'dead letters',
          `${counts}${last}`,
          'fix the cause (sellsy-webhooks stats lists the latest), then put them back: sellsy-webhooks replay',
        ),
      );
    }

    const idle: string[] = [];
    const seen: string[] = [];
    for (const queue of queues) {
      let count: number;
      try {
        count = await queue.getWorkersCount();
      } catch (err) {
        results.push(
          warn(
            'workers',
            `cannot tell: CLIENT LIST was refused (${describe(err)})`,
            'check the workers some other way (their logs, sellsy_webhooks_jobs_total)',
          ),
        );
        return results;
      }
      if (count === 0) idle.push(queue.name);
      else seen.push(`${count} on ${queue.name}`);
    }
    if (idle.length > 0) {
      const waiting = await queues[0]?.getJobCountByTypes('wait', 'prioritized', 'delayed');
      results.push(
        warn(
          'workers',
          `no worker connected to ${idle.join(', ')}${seen.length > 0 ? ` (${seen.join(', ')})` : ''}; ${waiting ?? 0} jobs wait in ${config.queueName}`,
          'start one: sellsy-webhooks work (or start: listener and worker in one process); a consumer of your own that is not a BullMQ worker is not seen here',
        ),
      );
    } else {
      results.push(ok('workers', seen.join(', ')));
    }
    return results;
  } finally {
    await Promise.all(queues.map((q) => q.close()));
  }
}

/** The inbox's oldest entry past this age, with a mover running: it is behind (as the alert rule says). */
const INBOX_BEHIND_SECONDS = 60;

async function inboxCheck(config: Config, client: RedisClient): Promise<CheckResult> {
  const keys = inboxKeys(config.queuePrefix, config.queueName);
  const { depth, oldestAgeSeconds, moverRunning } = await inboxState(client, keys);
  if (depth === 0) return ok('inbox', 'empty: every acknowledged delivery is a job');
  const what = `${depth} acknowledged deliveries not yet jobs, the oldest ${formatAge(oldestAgeSeconds)} old`;
  if (!moverRunning) {
    return warn(
      'inbox',
      `${what}; no listener is moving them`,
      'start a listener (sellsy-webhooks listen, or start): its mover makes them jobs, in order',
    );
  }
  if (oldestAgeSeconds > INBOX_BEHIND_SECONDS) {
    return warn(
      'inbox',
      `${what}; a listener's mover is on them but behind`,
      "look at the listeners' logs (inbox mover) and Redis's load; more listeners do not move faster (one moves at a time)",
    );
  }
  return ok('inbox', `${what}; a listener's mover is on them`);
}
