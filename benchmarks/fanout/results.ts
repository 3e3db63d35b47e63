/** What the fan-out benchmark measures, per destination count and per destination. */
import type { FanOutOptions } from './options.ts';

/** One request a sink received: arrival (ms since the epoch, sub-ms), the body's receivedAt (ms), relatedid, webhook-id. */
export type Arrival = [number, number, number, string];

export interface DestinationResult {
  name: string;
  /** Deliveries of the measured window it received ÷ (its last − its first arrival of them). */
  eventsPerSecond: number;
  /** Deliveries of the measured window it received (first arrival of each). */
  received: number;
  /** End to end, sink arrival − receivedAt, ms, the measured window's deliveries. */
  e2e: { p50: number; p90: number; p99: number; max: number };
  /** Acknowledged deliveries (warm-up included) it never received. */
  missing: number;
  /** Requests beyond one per delivery (the same webhook-id again). */
  duplicates: number;
  /** Deliveries it received that were not acknowledged (none expected). */
  unexpected: number;
}

/** % of one core over the measured window. */
export type FanOutCpu = Record<'listener' | 'worker' | 'redis' | 'generator' | 'sinks' | 'other', number>;

export interface FanOutRun {
  destinations: number;
  /** Deliveries acknowledged by the listener, warm-up included. */
  acknowledged: number;
  /** Jobs the listener created (one per acknowledged delivery expected). */
  jobs: number;
  non2xx: number;
  errors: number;
  /** Acknowledged during the measured window. */
  windowEvents: number;
  windowSeconds: number;
  achievedRate: number;
  /** HTTP acknowledgement latency from the intended start, ms. */
  ack: { p50: number; p99: number };
  /**
   * The worker's CPU seconds from before the open loop (idle, primed) until every sink had every delivery ÷ the
   * deliveries the open loop had acknowledged (warm-up included), in µs.
   */
  workerCpuPerEventUs: number;
  cpu: FanOutCpu;
  perDestination: DestinationResult[];
  ok: boolean;
}

export interface FanOutResult {
  options: FanOutOptions;
  redisVersion: string;
  /** Machine-wide CPU use just before the first run, % of one core (foreign load). */
  busyBeforePct: number;
  runs: FanOutRun[];
  /** CPU per event with N destinations ÷ with 1, for each N measured besides 1 (null without a run at 1). */
  cpuRatios: { destinations: number; ratio: number }[] | null;
  ok: boolean;
}
