/**
 * Whether Redis is answering the producer's writes: a frozen Redis keeps its connection open and answers nothing, so
 * it is told from a busy one by time since its last answer, not by the connection's state.
 */
import { ReplyError } from 'ioredis';
import type { RedisClient } from './connection.ts';

export class RedisSilence {
  /** Writes sent to Redis and not settled yet, and when Redis last made progress on them. */
  private inFlight = 0;
  progressAt = 0;
  /** The last write failed without an answer from Redis (timeout, lost connection): Redis has been silent since. */
  private silent = false;
  private probing = false;

  constructor(private readonly client: RedisClient) {}

  /** A new connection: nothing is known against it yet. */
  reset(): void {
    this.silent = false;
  }

  /** Redis made progress (a confirmation came). */
  progressed(): void {
    this.progressAt = Date.now();
  }

  /**
   * Redis has been sitting on writes for longer than `ms` without answering any. Once a write failed without an
   * answer, Redis counts as stalled until a PING gets one.
   */
  stalled(ms: number): boolean {
    if (this.silent) {
      this.probe();
      return true;
    }
    return this.inFlight > 0 && Date.now() - this.progressAt > ms;
  }

  /**
   * How long until Redis has been silent for `ms` (at least 1 ms): from its last answer while earlier writes wait on
   * it, else (nothing waiting, or Redis already counted silent) `ms` from now.
   */
  untilSilent(ms: number): number {
    if (this.inFlight === 0 || this.silent) return ms;
    return Math.max(1, Math.min(ms, this.progressAt + ms - Date.now()));
  }

  /** A write is sent. Silence is counted from the first write Redis did not answer: one sent while Redis is silent
   * does not make it look alive. */
  sent(): void {
    if (this.inFlight++ === 0 && !this.silent) this.progressAt = Date.now();
  }

  answered(): void {
    this.inFlight--;
    this.progressAt = Date.now();
    this.silent = false;
  }

  /**
   * A Redis error reply is an answer; a command timeout or a closed connection is not, or a frozen Redis would look
   * alive each time the commands sent before the freeze time out.
   */
  failed(err: unknown): void {
    if (err instanceof ReplyError) this.answered();
    else {
      this.inFlight--;
      this.silent = true;
    }
  }

  /** While Redis is silent, a PING (one at a time) finds out when it answers again, instead of a delivery. */
  private probe(): void {
    if (this.probing || this.client.status !== 'ready') return;
    this.probing = true;
    this.client
      .ping()
      .then(
        () => {
          this.silent = false;
          this.progressAt = Date.now();
        },
        () => undefined,
      )
      .finally(() => {
        this.probing = false;
      });
  }
}
