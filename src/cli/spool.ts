/**
 * `sellsy-webhooks spool status [--json]`: what the spool in SPOOL_DIR holds, read without disturbing a running
 * listener. `sellsy-webhooks spool drain`: moves everything it holds into the queue once, then exits (after an
 * outage, with no listener running on that directory). Exit codes: 0 done, 1 failure (Redis unreachable, directory
 * in use).
 */
import type { Config } from '../config/config.ts';
import { BullmqProducer, producerOptionsFrom } from '../queue/producer.ts';
import { redactUrl } from '../redact.ts';
import { inspectSpool, Spool } from '../spool/spool.ts';
import { type DrainCounts, drainSpool } from '../spool/spooling-producer.ts';
import { formatAge } from './operator.ts';

const MiB = 1024 * 1024;

export async function spoolStatus(config: Config, json: boolean): Promise<number> {
  const status = await inspectSpool(config.spool.dir, config.spool.maxBytes);
  if (json) {
    process.stdout.write(`${JSON.stringify({ dir: config.spool.dir, ...status })}\n`);
    return 0;
  }
  const lines = [
    `spool        ${config.spool.dir}`,
    `deliveries   ${status.depth}`,
    `size         ${(status.bytes / MiB).toFixed(2)} MiB of ${(status.maxBytes / MiB).toFixed(0)} MiB (SPOOL_MAX_BYTES)`,
    `segments     ${status.segments}`,
    `oldest       ${status.oldestReceivedAt === null ? '-' : `${status.oldestReceivedAt} (${formatAge(status.oldestAgeSeconds)} ago)`}`,
  ];
  if (status.tornBytes > 0) lines.push(`torn tail    ${status.tornBytes} bytes (cut off when a listener opens it)`);
  if (status.corruptBytes > 0 || status.badFiles.length > 0) {
    lines.push(`damaged      ${status.corruptBytes} bytes skipped; ${status.badFiles.length} unreadable files`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

export async function spoolDrain(config: Config, waitMs = 30_000): Promise<number> {
  const { spool, recovery } = await Spool.open({ dir: config.spool.dir, maxBytes: config.spool.maxBytes });
  const queue = new BullmqProducer(producerOptionsFrom(config));
  try {
    process.stdout.write(`spool ${config.spool.dir}: ${recovery.depth} deliveries to move\n`);
    if (recovery.depth === 0) return 0;
    const deadline = Date.now() + waitMs;
    while (!queue.health().ready) {
      if (Date.now() > deadline) {
        const at = redactUrl(config.redisUrl, 'REDIS_URL');
        process.stderr.write(`sellsy-webhooks: Redis at ${at} did not answer within ${waitMs / 1000} s\n`);
        return 1;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    try {
      // On a terminal, one line rewritten after each batch; in a log, the summary only.
      const total = recovery.depth;
      const progress = process.stdout.isTTY
        ? (c: DrainCounts) => process.stdout.write(`\rmoved ${c.queued + c.duplicate} of ${total}`)
        : undefined;
      const counts = await drainSpool(spool, queue, 100, progress);
      if (progress) process.stdout.write('\n');
      process.stdout.write(`moved ${counts.queued + counts.duplicate} deliveries to queue ${config.queueName}\n`);
      return 0;
    } catch (err) {
      const left = spool.status().depth;
      process.stderr.write(`sellsy-webhooks: drain stopped (${(err as Error).message}); ${left} deliveries left\n`);
      return 1;
    }
  } finally {
    await spool.close();
    await queue.close();
  }
}
