/**
 * `sellsy-webhooks spool status [--json]`: what the spool in SPOOL_DIR holds, read without disturbing a running
 * listener. `sellsy-webhooks spool drain`: moves everything it holds into the queue once, quarantined deliveries
 * included, then exits (after an outage, with no listener running on that directory). Exit codes: 0 done, 1 failure
 * (Redis unreachable, directory in use, deliveries left in the spool or quarantined again).
 */
import { type DestinationStream, pino } from 'pino';
import type { Config } from '../config/config.ts';
import { openDrainProducer } from '../listener/open-producer.ts';
import { createLogger } from '../logger.ts';
import { describeRedis, redisSettingsOf } from '../queue/connection.ts';
import { untilReady } from '../queue/writer.ts';
import { inspectSpool } from '../spool/recovery.ts';
import { Spool } from '../spool/spool.ts';
import { DRAIN_MAX_BACKOFF_MS, SpoolDrainer } from '../spool/spooling-producer.ts';
import { formatAge } from './format.ts';
import type { CliIo } from './io.ts';

const MiB = 1024 * 1024;

/** What the spool commands print through: the part of the command line's `io` they use. */
export type SpoolIo = Pick<CliIo, 'out' | 'err' | 'isTTY' | 'progress' | 'log'>;

export async function spoolStatus(config: Config, json: boolean, io: SpoolIo): Promise<number> {
  const status = await inspectSpool(config.spool.dir, config.spool.maxBytes);
  if (json) {
    io.out(JSON.stringify({ dir: config.spool.dir, ...status }));
    return 0;
  }
  const lines = [
    `spool        ${config.spool.dir}`,
    `deliveries   ${status.depth}`,
    `size         ${(status.bytes / MiB).toFixed(2)} MiB of ${(status.maxBytes / MiB).toFixed(0)} MiB (SPOOL_MAX_BYTES)`,
    `segments     ${status.segments}`,
    `oldest       ${status.oldestReceivedAt === null ? '-' : `${status.oldestReceivedAt} (${formatAge(status.oldestAgeSeconds)} ago)`}`,
  ];
  if (status.quarantined > 0 || status.quarantineFiles > 0) {
    lines.push(
      `quarantined  ${status.quarantined} (Redis could not take them; \`spool drain\` moves them into the queue)`,
    );
  }
  if (status.tornBytes > 0) lines.push(`torn tail    ${status.tornBytes} bytes (cut off when a listener opens it)`);
  if (status.corruptBytes > 0 || status.badFiles.length > 0) {
    lines.push(`damaged      ${status.corruptBytes} bytes skipped; ${status.badFiles.length} unreadable files`);
  }
  io.out(lines.join('\n'));
  return 0;
}

export async function spoolDrain(config: Config, io: SpoolIo, waitMs = 30_000): Promise<number> {
  const { spool, recovery } = await Spool.open({ dir: config.spool.dir, maxBytes: config.spool.maxBytes });
  // Log lines (a folded delivery's record running again) on stderr: stdout is the command's report.
  const logDestination: DestinationStream = io.log ?? pino.destination({ dest: 2, sync: true });
  const logger = createLogger(config.logLevel, logDestination);
  const queue = openDrainProducer(config, logger);
  try {
    const requeued = await spool.requeueQuarantined();
    const total = recovery.depth + requeued;
    io.out(
      `spool ${config.spool.dir}: ${total} deliveries to move${requeued > 0 ? ` (${requeued} from the quarantine)` : ''}`,
    );
    if (total === 0) return 0;
    if (!(await untilReady(queue, waitMs))) {
      const at = describeRedis(redisSettingsOf(config));
      io.err(`sellsy-webhooks: Redis at ${at} did not answer within ${waitMs / 1000} s`);
      return 1;
    }
    // On a terminal, one line rewritten after each batch; in a log, the summary only.
    const line = io.isTTY ? io.progress : undefined;
    const progress = line
      ? () => line(`moved ${drainer.total.queued + drainer.total.duplicate} of ${total}`)
      : undefined;
    const drainer: SpoolDrainer = new SpoolDrainer(spool, queue, { onBatch: progress });
    const moved = drainer.total;
    // Passes until the spool is empty: a pass stopped by a record that fails is followed by another (it is retried
    // alone, then quarantined), with a growing pause; a Redis gone for longer than `waitMs` ends the command.
    let backoffMs = 250;
    let lastError: Error | null = null;
    let failedSince = Date.now();
    while (spool.status().depth > 0) {
      try {
        await drainer.pass();
      } catch (err) {
        const before = lastError;
        lastError = err as Error;
        if (before === null) failedSince = Date.now();
        if (Date.now() - failedSince > waitMs) break;
        await new Promise((r) => setTimeout(r, backoffMs));
        backoffMs = Math.min(DRAIN_MAX_BACKOFF_MS, backoffMs * 2);
        continue;
      }
      lastError = null;
      backoffMs = 250;
    }
    await spool.cleanup();
    if (progress) io.out('');
    io.out(`moved ${moved.queued + moved.duplicate} deliveries to queue ${config.queueName}`);
    const left = spool.status();
    if (left.quarantined > 0) {
      io.err(
        `sellsy-webhooks: ${left.quarantined} deliveries Redis could not take are still quarantined in ${config.spool.dir}`,
      );
    }
    if (left.depth > 0) {
      io.err(
        `sellsy-webhooks: drain stopped (${lastError?.message ?? 'unknown error'}); ${left.depth} deliveries left`,
      );
    }
    return left.depth > 0 || left.quarantined > 0 ? 1 : 0;
  } finally {
    await spool.close();
    await queue.close();
  }
}
