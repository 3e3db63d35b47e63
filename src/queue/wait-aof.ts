/**
 * Group commit for `REDIS_WAIT_AOF`: a write counts as confirmed once Redis has fsynced it to its append-only file.
 * One `WAITAOF 1 0` covers every write sent before it on the connection, so the writes waiting for a confirmation
 * share the next one, and only one is in flight at a time.
 */
import type { Redis } from 'ioredis';

export class AofGroupCommit {
  /** Confirmations waiting for the next WAITAOF, and whether one is in flight. */
  private waiting: { done: () => void; fail: (err: unknown) => void }[] = [];
  private inFlight = false;

  constructor(
    private readonly client: Redis,
    /** Redis's own deadline for the fsync (`ENQUEUE_TIMEOUT_MS`). */
    private readonly timeoutMs: number,
  ) {}

  /** Resolves once the next WAITAOF confirmed the fsync of the writes sent before this call; rejects if not. */
  afterFsync(): Promise<void> {
    return new Promise<void>((done, fail) => {
      this.waiting.push({ done, fail });
      if (!this.inFlight) this.send();
    });
  }

  private send(): void {
    const group = this.waiting;
    this.waiting = [];
    this.inFlight = true;
    this.client
      .call('WAITAOF', '1', '0', String(this.timeoutMs))
      .then(
        (reply) => {
          const local = Array.isArray(reply) ? Number(reply[0]) : 0;
          if (local >= 1) for (const g of group) g.done();
          else {
            const err = new Error(`Redis did not fsync its AOF within ${this.timeoutMs} ms`);
            for (const g of group) g.fail(err);
          }
        },
        (err: unknown) => {
          for (const g of group) g.fail(err);
        },
      )
      .finally(() => {
        this.inFlight = false;
        if (this.waiting.length > 0) this.send();
      });
  }
}
