/**
 * `sellsy-webhooks stats [--json]`: one screen about the queues and the spool, read without changing anything.
 *
 * For the ingest queue, and the record queue when in use (RECORD_ORDER=latest, or it has keys in Redis): jobs by
 * state; completed and failed jobs per minute over the last 1, 5 and 15 minutes; the oldest waiting job; dead letters
 * (count and the 5 most recent); connected workers. Then what the spool holds.
 *
 * Throughput comes from BullMQ's own metrics when a worker records them (WorkerOptions `metrics`; minute buckets,
 * the current minute included), else from the completed and failed sets, whose scores are the jobs' finish times
 * (ZCOUNT: exact and cheap at any size, but blind to jobs already removed: JOB_KEEP_COMPLETED_SECONDS or
 * JOB_KEEP_FAILED_SECONDS under 15 minutes make the figures low, and `note` says so). `failed` means failed for good
 * (dead letters); a retried attempt is not counted.
 *
 * `--json` prints one object, `StatsReport`. Exit codes: 0 done; 1 Redis unreachable (within a few seconds; the
 * message names the address with its password masked; with --json, `{"error": "…"}`).
 */
import { type Job, Queue } from 'bullmq';
import type { Config } from '../config/config.ts';
import { readQueue } from '../metrics/queue-stats.ts';
import {
  addressOf,
  connectOrFail,
  describeRedis,
  masterNodes,
  type RedisClient,
  redisSettingsOf,
  slotMaster,
  slotOf,
} from '../queue/connection.ts';
import { type DestinationStatus, destinationStatus } from '../queue/destination-status.ts';
import { onlineReplicas, parseInfo } from '../queue/durability.ts';
import { inboxKeys, inboxState } from '../queue/inbox.ts';
import { recordQueueInUse, recordQueueName } from '../queue/records.ts';
import { type LastRun, ReconcileState } from '../reconcile/state.ts';
import { inspectSpool, type SpoolRecovery, type SpoolStatus } from '../spool/recovery.ts';
import { formatAge, formatBytes, oneLine } from './format.ts';
import { scrubbing } from './secrets.ts';
import { destinationLines } from './stats-destinations.ts';

export interface StatsOptions {
  /** One JSON object (`StatsReport`) instead of the text screen. */
  json?: boolean;
}

export interface ThroughputWindow {
  minutes: number;
  /** Jobs completed in the window; null when unknown (completed jobs are not kept). */
  completed: number | null;
  /** Jobs failed for good in the window; null when unknown (failed jobs are not kept). */
  failed: number | null;
  completedPerMinute: number | null;
  failedPerMinute: number | null;
}

export interface Throughput {
  /** `bullmq-metrics`: the worker records BullMQ metrics; `finished-sets`: counted in the completed/failed sets. */
  method: 'bullmq-metrics' | 'finished-sets';
  windows: ThroughputWindow[];
  /** Why the figures may be low or missing, else null. */
  note: string | null;
}

export interface DeadLetter {
  id: string;
  name: string;
  /** ISO 8601, or null when unknown. */
  failedAt: string | null;
  attemptsMade: number;
  /** The failed reason on one line, shortened. */
  reason: string;
}

export interface QueueStats {
  name: string;
  role: 'ingest' | 'records';
  counts: { waiting: number; active: number; delayed: number; prioritized: number; completed: number; failed: number };
  throughput: Throughput;
  /** The job that has waited longest in the wait list, or null when none waits. */
  oldestWaiting: { id: string; name: string; addedAt: string; ageSeconds: number } | null;
  deadLetters: { count: number; latest: DeadLetter[] };
  /** BullMQ workers connected to this queue; null when Redis refuses CLIENT LIST. */
  workers: number | null;
}

export type SpoolStats =
  | { dir: string; enabled: false }
  | ({ dir: string; enabled: true } & SpoolStatus & SpoolRecovery)
  | { dir: string; enabled: true; error: string };

/** One Redis master: on a Cluster, each of them; else the one server (through Sentinel: the master of the moment). */
export interface NodeStats {
  /** `host:port` as the client is connected to it. */
  node: string;
  usedMemoryBytes: number | null;
  /** `maxmemory`; 0: no limit. */
  maxmemoryBytes: number | null;
  /** Replicas connected and in sync (`state=online`). */
  replicas: number;
  /** Holds the queues' keys (on a Cluster, the master of their hash slot). */
  holdsQueues: boolean;
}

export interface StatsReport {
  /** Where Redis is (REDIS_URL with its password masked, or the Sentinels, or the Cluster's seed nodes). */
  redis: string;
  nodes: NodeStats[];
  /** When the figures were read (ISO 8601). */
  at: string;
  queues: QueueStats[];
  /** Acknowledged deliveries not yet made jobs (ACK_WRITE=inbox; listeners move them), see `InboxStats`. */
  inbox: InboxStats;
  /** The periodic reconcile (RECONCILE_INTERVAL_SECONDS): its last run, as the workers recorded it in Redis. */
  reconcile: ReconcileStats;
  /** Per destination of `forward` (DESTINATIONS_FILE or FORWARD_URL): breaker and dead letters; [] when none. */
  destinations: DestinationStatus[];
  spool: SpoolStats;
}

export interface ReconcileStats {
  /** RECONCILE_INTERVAL_SECONDS as this process reads it (0: off). */
  intervalSeconds: number;
  /** The end of the last successful window (ISO 8601), or null before the first run. */
  cursor: string | null;
  last: LastRun | null;
  lastSuccess: LastRun | null;
}

export interface InboxStats {
  /** Entries waiting in the inbox or being moved. */
  depth: number;
  /** Age of the oldest entry; 0 when empty. */
  oldestAgeSeconds: number;
  /** A listener's mover holds the inbox lease (is moving entries, or waiting for them). */
  moverRunning: boolean;
}

const WINDOWS = [1, 5, 15] as const;
const DEAD_LETTERS_SHOWN = 5;

export async function stats(config: Config, out: (line: string) => void, options: StatsOptions = {}): Promise<number> {
  const write = scrubbing(config, out);
  let report: StatsReport;
  try {
    report = await collectStats(config);
  } catch (err) {
    const message = oneLine((err as Error).message, 400);
    write(options.json ? JSON.stringify({ error: message }) : `sellsy-webhooks stats: ${message}`);
    return 1;
  }
  if (options.json) write(JSON.stringify(report));
  else for (const line of formatReport(report)) write(line);
  return 0;
}

/** Reads every figure of the report. Throws when Redis does not answer. */
export async function collectStats(config: Config): Promise<StatsReport> {
  const client = await connectOrFail(config, 'stats');
  try {
    const now = Date.now();
    const queues: QueueStats[] = [await queueStats(config, client, config.queueName, 'ingest', now)];
    if (await recordQueueInUse(config, client)) {
      queues.push(await queueStats(config, client, recordQueueName(config.queueName), 'records', now));
    }
    return {
      redis: describeRedis(redisSettingsOf(config)),
      nodes: await nodeStats(config, client),
      at: new Date(now).toISOString(),
      queues,
      inbox: await inboxStats(config, client, now),
      reconcile: await reconcileStats(config, client),
      destinations: await destinationStatus(config, client),
      spool: await spoolStats(config),
    };
  } finally {
    client.disconnect();
  }
}

async function inboxStats(config: Config, client: RedisClient, now: number): Promise<InboxStats> {
  const keys = inboxKeys(config.queuePrefix, config.queueName);
  const state = await inboxState(client, keys, now);
  return { ...state, oldestAgeSeconds: Math.round(state.oldestAgeSeconds) };
}

async function reconcileStats(config: Config, client: RedisClient): Promise<ReconcileStats> {
  const state = new ReconcileState(client, config.queuePrefix, config.queueName);
  const [cursor, { last, lastSuccess }] = await Promise.all([state.cursor(), state.runs()]);
  return {
    intervalSeconds: config.reconcile.intervalSeconds,
    cursor: cursor === null ? null : new Date(cursor).toISOString(),
    last,
    lastSuccess,
  };
}

async function nodeStats(config: Config, client: RedisClient): Promise<NodeStats[]> {
  const slot = await slotOf(client, `${config.queuePrefix}:${config.queueName}:meta`);
  const queuesOn = slot === null ? null : slotMaster(client, slot);
  return Promise.all(
    masterNodes(client).map(async (node) => {
      const info = parseInfo(await node.info());
      const number = (field: string) => (info.has(field) ? Number(info.get(field)) : null);
      return {
        node: addressOf(node),
        usedMemoryBytes: number('used_memory'),
        maxmemoryBytes: number('maxmemory'),
        replicas: onlineReplicas(info),
        holdsQueues: queuesOn === null || queuesOn === node,
      };
    }),
  );
}

async function queueStats(
  config: Config,
  client: RedisClient,
  name: string,
  role: QueueStats['role'],
  now: number,
): Promise<QueueStats> {
  const queue = new Queue(name, { connection: client, prefix: config.queuePrefix });
  queue.on('error', () => undefined);
  try {
    const { counts: all, oldestWaiting: oldest } = await readQueue(queue);
    const { waiting, active, delayed, prioritized, completed, failed: failedCount } = all;
    const counts = { waiting, active, delayed, prioritized, completed, failed: failedCount };
    const failed = (await queue.getFailed(0, DEAD_LETTERS_SHOWN - 1)) as Job[];
    let workers: number | null;
    try {
      workers = await queue.getWorkersCount();
    } catch {
      workers = null; // CLIENT LIST is disabled on some managed Redis services
    }
    return {
      name,
      role,
      counts,
      throughput: await throughputOf(config, client, queue, now),
      oldestWaiting:
        oldest?.id === undefined
          ? null
          : {
              id: oldest.id,
              name: oldest.name,
              addedAt: new Date(oldest.timestamp).toISOString(),
              ageSeconds: Math.max(0, Math.round((now - oldest.timestamp) / 1000)),
            },
      deadLetters: {
        count: counts.failed,
        latest: failed.map((job) => ({
          id: job.id ?? '?',
          name: job.name,
          failedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
          attemptsMade: job.attemptsMade,
          reason: oneLine(job.failedReason ?? '', 160),
        })),
      },
      workers,
    };
  } finally {
    await queue.close();
  }
}

async function throughputOf(config: Config, client: RedisClient, queue: Queue, now: number): Promise<Throughput> {
  const [completedMetrics, failedMetrics] = await Promise.all([
    queue.getMetrics('completed', 0, 15),
    queue.getMetrics('failed', 0, 15),
  ]);
  if (completedMetrics.meta.prevTS > 0 || failedMetrics.meta.prevTS > 0) {
    const completed = fromMetrics(completedMetrics, now);
    const failed = fromMetrics(failedMetrics, now);
    return {
      method: 'bullmq-metrics',
      windows: WINDOWS.map((minutes, i) => window(minutes, completed[i] ?? 0, failed[i] ?? 0)),
      note: null,
    };
  }
  const { keepCompletedSeconds, keepFailedSeconds } = config.jobs;
  const count = async (key: string, kept: number) =>
    kept === 0
      ? WINDOWS.map(() => null)
      : Promise.all(WINDOWS.map((minutes) => client.zcount(key, now - minutes * 60_000, '+inf')));
  const [completed, failed] = await Promise.all([
    count(queue.keys.completed ?? `${queue.qualifiedName}:completed`, keepCompletedSeconds),
    count(queue.keys.failed ?? `${queue.qualifiedName}:failed`, keepFailedSeconds),
  ]);
  const notes: string[] = [];
  for (const [what, kept, variable] of [
    ['completed', keepCompletedSeconds, 'JOB_KEEP_COMPLETED_SECONDS'],
    ['failed', keepFailedSeconds, 'JOB_KEEP_FAILED_SECONDS'],
  ] as const) {
    if (kept === 0) notes.push(`${what} jobs are removed at once (${variable}=0): their throughput is unknown`);
    else if (kept < 15 * 60) notes.push(`${what} jobs are kept ${kept} s (${variable}): longer windows count low`);
  }
  return {
    method: 'finished-sets',
    windows: WINDOWS.map((minutes, i) => window(minutes, completed[i] ?? null, failed[i] ?? null)),
    note: notes.length > 0 ? notes.join('; ') : null,
  };
}

function window(minutes: number, completed: number | null, failed: number | null): ThroughputWindow {
  const rate = (n: number | null) => (n === null ? null : Math.round((n / minutes) * 100) / 100);
  return { minutes, completed, failed, completedPerMinute: rate(completed), failedPerMinute: rate(failed) };
}

/**
 * Jobs per window from BullMQ's metrics. A worker counts each job in `meta.count`; when a job finishes in a later
 * minute than the last flush (`meta.prevTS`), the jobs since that flush are pushed as one data point, preceded by a
 * zero for each minute without jobs. So `data[i]` holds the minute `flush - 1 - i`, and the minute of the last flush
 * is still in the meta (`count - prevCount`).
 */
function fromMetrics(
  metrics: { meta: { count: number; prevTS: number; prevCount: number }; data: number[] },
  now: number,
) {
  if (metrics.meta.prevTS === 0) return WINDOWS.map(() => 0);
  const flushMinute = Math.floor(metrics.meta.prevTS / 60_000);
  const nowMinute = Math.floor(now / 60_000);
  const inMinute = (minute: number): number => {
    if (minute === flushMinute) return metrics.meta.count - metrics.meta.prevCount;
    if (minute > flushMinute) return 0;
    return metrics.data[flushMinute - 1 - minute] ?? 0;
  };
  return WINDOWS.map((minutes) => {
    let sum = 0;
    for (let k = 0; k < minutes; k++) sum += inMinute(nowMinute - k);
    return sum;
  });
}

async function spoolStats(config: Config): Promise<SpoolStats> {
  const { dir, maxBytes } = config.spool;
  if (maxBytes === 0) return { dir, enabled: false };
  try {
    return { dir, enabled: true, ...(await inspectSpool(dir, maxBytes)) };
  } catch (err) {
    return { dir, enabled: true, error: oneLine((err as Error).message, 300) };
  }
}

// --- the text screen ------------------------------------------------------------------------------------------

function formatReport(report: StatsReport): string[] {
  const lines = [`sellsy-webhooks stats at ${report.at}, ${report.redis}`];
  const mib = (bytes: number | null) => (bytes === null ? '?' : formatBytes(bytes));
  for (const n of report.nodes) {
    const limit = n.maxmemoryBytes ? ` of ${mib(n.maxmemoryBytes)}` : '';
    const queues = report.nodes.length > 1 && n.holdsQueues ? ', holds the queues' : '';
    lines.push(
      `redis ${n.node}: ${mib(n.usedMemoryBytes)}${limit} used, ${n.replicas} replica${n.replicas === 1 ? '' : 's'} in sync${queues}`,
    );
  }
  for (const q of report.queues) {
    const c = q.counts;
    lines.push(
      '',
      `queue ${q.name} (${q.role})`,
      `  jobs          waiting ${c.waiting}, active ${c.active}, delayed ${c.delayed}, prioritized ${c.prioritized}, completed ${c.completed}, failed ${c.failed}`,
    );
    const method = q.throughput.method === 'bullmq-metrics' ? "BullMQ's metrics" : 'finish times of kept jobs';
    lines.push(
      `  per minute    ${q.throughput.windows.map((w) => `${w.minutes} min`.padStart(8)).join('')}   (${method})`,
    );
    for (const kind of ['completed', 'failed'] as const) {
      const cells = q.throughput.windows.map((w) => {
        const rate = kind === 'completed' ? w.completedPerMinute : w.failedPerMinute;
        return (rate === null ? '?' : rate.toFixed(2)).padStart(8);
      });
      lines.push(`    ${kind.padEnd(10)}${cells.join('')}`);
    }
    if (q.throughput.note) lines.push(`    (${q.throughput.note})`);
    const o = q.oldestWaiting;
    lines.push(
      `  oldest wait   ${o === null ? '-' : `${o.name} ${o.id}, added ${o.addedAt} (${formatAge(o.ageSeconds)} ago)`}`,
    );
    lines.push(`  workers       ${q.workers === null ? 'unknown (CLIENT LIST refused)' : `${q.workers} connected`}`);
    const more = q.deadLetters.count > q.deadLetters.latest.length ? ', most recent first' : '';
    lines.push(
      `  dead letters  ${q.deadLetters.count}${q.deadLetters.count > 0 ? `${more} (sellsy-webhooks replay)` : ''}`,
    );
    for (const d of q.deadLetters.latest) {
      lines.push(`    ${d.id}  ${d.name}  failed ${d.failedAt ?? '?'} after ${d.attemptsMade}: ${d.reason}`);
    }
  }
  lines.push('');
  const i = report.inbox;
  const mover = i.moverRunning
    ? 'a listener is moving them'
    : 'no listener is moving them: start one (sellsy-webhooks listen)';
  lines.push(
    i.depth === 0
      ? `inbox         empty${i.moverRunning ? '' : ' (no mover running)'}`
      : `inbox         ${i.depth} deliveries waiting to become jobs, oldest ${formatAge(i.oldestAgeSeconds)} old; ${mover}`,
  );
  lines.push(reconcileLine(report.reconcile));
  lines.push(...destinationLines(report.destinations));
  const s = report.spool;
  if (!s.enabled) lines.push(`spool         off (SPOOL_MAX_BYTES=0)`);
  else if ('error' in s) lines.push(`spool         ${s.dir}: cannot be read (${s.error})`);
  else {
    const oldest =
      s.oldestReceivedAt === null ? '' : `, oldest ${s.oldestReceivedAt} (${formatAge(s.oldestAgeSeconds)} ago)`;
    const damaged =
      s.corruptBytes > 0 || s.badFiles.length > 0
        ? `; damaged ${s.corruptBytes} bytes, ${s.badFiles.length} files`
        : '';
    lines.push(
      `spool         ${s.dir}: ${s.depth} deliveries, ${formatBytes(s.bytes)} of ${formatBytes(s.maxBytes)}${oldest}${damaged}`,
    );
  }
  return lines;
}

function reconcileLine(r: ReconcileStats): string {
  const every = r.intervalSeconds > 0 ? `every ${r.intervalSeconds} s` : 'off (RECONCILE_INTERVAL_SECONDS=0)';
  if (r.last === null) return `reconcile     ${every}; no run yet`;
  const run = (l: LastRun) =>
    `${l.at}, ${l.outcome}: ${l.changes} changes (${l.queued} queued) in ${l.scanned} objects, ${l.since} → ${l.until}`;
  const failed = r.last.outcome === 'failure' ? ` (${r.last.error ?? 'failed'})` : '';
  const success =
    r.last.outcome === 'failure' ? `; last success ${r.lastSuccess === null ? 'never' : r.lastSuccess.at}` : '';
  return `reconcile     ${every}; last run ${run(r.last)}${failed}${success}`;
}
