/**
 * The producer's options: what `BullmqProducer` takes, the part that comes from the configuration, and the retry and
 * retention options every job is written with (the ingest queue's and the record queue's).
 */
import type { JobsOptions } from 'bullmq';
import type { Config } from '../config/config.ts';
import type { RedisClient, RedisSettings } from './connection.ts';
import type { WebhookJob } from './contract.ts';
import type { DurabilityReport } from './durability.ts';

export interface BullmqProducerOptions {
  /** Where Redis is: one server, a Sentinel group or a Cluster. */
  redis: RedisSettings;
  queueName: string;
  prefix: string;
  timeoutMs: number;
  dedupWindowSeconds: number;
  jobs: { attempts: number; backoffMs: number; keepCompletedSeconds: number; keepFailedSeconds: number };
  /** Called each time the connection becomes ready, with Redis's durability settings. */
  onReady?: (report: DurabilityReport) => void;
  onError?: (err: Error) => void;
  /** Default `MAX_PENDING_COMMANDS`. */
  maxPendingCommands?: number;
  /**
   * The connection's deadline for any command, when it must be longer than `timeoutMs`: the spool's drain gives each
   * batch a deadline that grows with its size (src/spool/spooling-producer.ts). Default `timeoutMs`.
   */
  commandTimeoutMs?: number;
  /** Suffix of the Redis connection name (`<queue>:<role>`, shown by CLIENT LIST). Default `producer`. */
  role?: string;
  /**
   * `REDIS_WAIT_AOF`: a job counts as confirmed only once Redis has fsynced it to its append-only file (`WAITAOF 1 0`,
   * Redis ≥ 7.2 or Valkey ≥ 8, AOF on). One WAITAOF covers every write sent before it on the connection, so
   * concurrent deliveries share it (group commit).
   */
  waitAof?: boolean;
  /**
   * `REDIS_WAIT_REPLICAS`: a job counts as confirmed only once this many replicas have it (`WAIT N`, or with `waitAof`
   * `WAITAOF 1 N`), shared by concurrent deliveries like WAITAOF. Fewer in time: `EnqueueError('replicas')`.
   */
  waitReplicas?: number;
  /** Redis's own deadline for WAIT and WAITAOF. Default `timeoutMs`; the listener's is its ack budget. */
  confirmTimeoutMs?: number;
  /**
   * Called when Redis folded a delivery into an earlier job (a duplicate), before `enqueue` resolves, within
   * `ENQUEUE_TIMEOUT_MS`; if it fails, so does `enqueue` (and the spool keeps the delivery to try again). Never
   * called for a delivery that made a job.
   */
  onDuplicate?: (job: WebhookJob, client: RedisClient) => Promise<void>;
  /**
   * `ACK_WRITE=inbox`: a delivery is pushed to the inbox list (src/queue/inbox.ts), not written as a job; the result's
   * `jobId` is the delivery id and `duplicate` false (the mover finds out later).
   */
  inbox?: boolean;
}

/** The producer settings that come from the configuration. */
export function producerOptionsFrom(config: Config): BullmqProducerOptions {
  return {
    redis: config.redis,
    queueName: config.queueName,
    prefix: config.queuePrefix,
    timeoutMs: config.enqueueTimeoutMs,
    dedupWindowSeconds: config.dedupWindowSeconds,
    jobs: config.jobs,
    waitAof: config.redisWaitAof,
    waitReplicas: config.redisWaitReplicas,
  };
}

/** Retry and retention options of every job: the ingest queue's and the record queue's. */
export function jobOptionsOf({ jobs }: Pick<BullmqProducerOptions, 'jobs'>): JobsOptions {
  return {
    attempts: jobs.attempts,
    // Exponential backoff, each delay drawn at random in its upper half (jitter 0.5): retries of many jobs that
    // failed together (a target down) do not come back together.
    backoff: { type: 'exponential', delay: jobs.backoffMs, jitter: 0.5 },
    // Age-based removal keeps the deduplication key alive for its whole window (an explicit `job.remove()` or
    // `queue.clean()` deletes it). 0 = remove at once.
    removeOnComplete: jobs.keepCompletedSeconds === 0 ? true : { age: jobs.keepCompletedSeconds },
    removeOnFail: jobs.keepFailedSeconds === 0 ? true : { age: jobs.keepFailedSeconds },
  };
}
