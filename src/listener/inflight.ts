/**
 * `INFLIGHT_BYTES_LIMIT`: a byte semaphore in front of body reading. A request takes its body's size (its
 * Content-Length, else BODY_LIMIT_BYTES) before its body is read, and gives it back once answered; past the limit,
 * requests wait in arrival order, and their bodies stay in the kernel's socket buffers and the sender's (TCP flow
 * control), not in the listener's memory. Nothing is refused: a body larger than the limit is read alone.
 * Invariant: the bytes taken never exceed the limit, or one body when a single body is larger.
 *
 * Written by hand: a counting semaphore keyed on bytes with FIFO order is a few lines, and the libraries that offer
 * one (async-sema, p-limit) count requests, not bytes.
 */

interface Waiter {
  bytes: number;
  resolve: (release: () => void) => void;
}

export class ByteGate {
  /** Bytes taken now. */
  inFlight = 0;
  /** Most bytes ever taken at once. */
  peak = 0;
  private readonly waiters: Waiter[] = [];

  constructor(readonly limit: number) {}

  /** Resolves, once `bytes` fit under the limit, with the function that gives them back (idempotent). */
  acquire(bytes: number): Promise<() => void> {
    if (this.waiters.length === 0 && this.fits(bytes)) return Promise.resolve(this.take(bytes));
    return new Promise((resolve) => this.waiters.push({ bytes, resolve }));
  }

  /** Requests waiting for their turn. */
  get waiting(): number {
    return this.waiters.length;
  }

  private fits(bytes: number): boolean {
    return this.inFlight === 0 || this.inFlight + bytes <= this.limit;
  }

  private take(bytes: number): () => void {
    this.inFlight += bytes;
    if (this.inFlight > this.peak) this.peak = this.inFlight;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inFlight -= bytes;
      this.admit();
    };
  }

  private admit(): void {
    for (let next = this.waiters[0]; next !== undefined && this.fits(next.bytes); next = this.waiters[0]) {
      this.waiters.shift();
      next.resolve(this.take(next.bytes));
    }
  }
}
