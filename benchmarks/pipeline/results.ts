/** What the pipeline benchmark measures: the results of its phases, and the CPU use of the processes involved. */
import type { PipelineOptions } from './options.ts';

/** The processes whose CPU time is measured; `generator` is whoever sends the load (or inserts, for the reference). */
export type Pids = Record<'listener' | 'worker' | 'redis' | 'generator', number | undefined>;

/**
 * % of one core over a window: per process; `postgres`, every process of the machine named `postgres` (its backends
 * and background writers: not only ours when something else uses that server); `other`, the rest of the machine
 * (foreign load, kernel time not charged to a process).
 */
export type CpuUse = Record<'listener' | 'worker' | 'redis' | 'generator' | 'postgres' | 'other', number>;

export interface Integrity {
  acknowledged: number;
  rows: number;
  /** Acknowledged deliveries without a row. */
  missing: number;
  /** Jobs the listener created during the phase (from the queue's counts). */
  jobs: number;
  /** Jobs beyond one per acknowledged delivery. (Rows cannot repeat: the table's unique key absorbs a second
   * insert of a delivery, so a duplicate shows in the queue, not in the table.) */
  duplicates: number;
  non2xx: number;
  errors: number;
  /** Deliveries the listener answered from its local spool (Redis missed ACK_BUDGET_MS), queued later. */
  spooled: number;
  ok: boolean;
}

export interface ThroughputResult {
  events: number;
  connections: number;
  /** Rows ÷ (last stored_at − first received_at). */
  pipelineRate: number;
  pipelineSeconds: number;
  /** 2xx answers ÷ wall time of the posting. */
  listenerRate: number;
  listenerSeconds: number;
  /** Rows ÷ (last stored_at − first stored_at). */
  workerRate: number;
  /** Most connections the worker held to PostgreSQL at once (its pool size, seen from pg_stat_activity). */
  workerPoolSize: number;
  /** Rows stored after the last delivery was received, and their rate (the worker alone, draining the backlog). */
  drainRows: number;
  drainRate: number;
  cpu: CpuUse;
  integrity: Integrity;
}

export interface DirectInsertResult {
  events: number;
  poolSize: number;
  concurrency: number;
  rate: number;
  seconds: number;
  cpu: CpuUse;
}

export interface LatencyResult {
  rate: number;
  seconds: number;
  achievedRate: number;
  /** Rows of the measured window. */
  measuredRows: number;
  /** End to end (stored_at − received_at), ms. */
  e2e: { p50: number; p90: number; p99: number; max: number };
  /** HTTP acknowledgement from the intended start, ms (the same requests). */
  ack: { p50: number; p99: number; max: number };
  cpu: CpuUse;
  integrity: Integrity;
}

export interface PipelineResult {
  options: PipelineOptions;
  schema: string;
  postgresVersion: string;
  synchronousCommit: string;
  redisVersion: string;
  busyBeforePct: number;
  throughput: ThroughputResult;
  direct: DirectInsertResult;
  /** pipeline events/s ÷ direct-insert events/s. */
  ratio: number;
  latency: LatencyResult;
  ok: boolean;
}
