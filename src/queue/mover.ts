/**
 * The mover: turns inbox entries into BullMQ jobs (see src/queue/inbox.ts for the keys and why the move is safe).
 *
 * One mover moves at a time, the holder of the inbox lease; the movers of the other listeners wait and take the lease
 * over when it expires (its holder stopped or was killed). The holder loops: claim up to `batch` entries, write each
 * as a job through the producer (job id = delivery id, deduplication id = dedup key; a folded duplicate makes its
 * record run again, as on the listener's own path), then remove them from `moving` and claim the next ones (one
 * script: one round trip per batch). When the inbox is empty it waits on `BLMOVE`, which hands it the next entry as
 * soon as it is pushed. A write that fails leaves the whole batch in `moving`, to be written again (harmless: the jobs
 * already made are returned as they are).
 *
 * Runs in a thread of its own in the listener process (src/listener/mover-thread.ts), so that BullMQ's job creation
 * never holds up the event loop that answers Sellsy.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { RedisClient } from './connection.ts';
import { decodeEntry, type InboxKeys, inboxCommands, LEASE_LOST } from './inbox.ts';
import type { QueueWriter } from './writer.ts';

export interface MovedReport {
  /** Entries that made a new job. */
  queued: number;
  /** Entries folded into an earlier job (the same delivery within the deduplication window). */
  duplicate: number;
  /** Per entry: ms from its receipt to its job. */
  lagsMs: number[];
}

/** What a mover running in a thread tells the thread that started it. */
export type MoverMessage =
  | ({ type: 'moved' } & MovedReport)
  | { type: 'lease'; held: boolean; token: string }
  | { type: 'stopped' };

export interface MoverOptions {
  keys: InboxKeys;
  /** Writes the jobs; its connection also carries the lease and claim scripts (short, bounded commands). */
  producer: QueueWriter & { client: RedisClient };
  /** A connection for the blocking wait on an empty inbox (nothing else is sent on it). */
  waiter: RedisClient;
  /** Entries per claim. Default 200. */
  batch?: number;
  /** Lease length, ms; renewed every third of it. Default 5,000. */
  leaseMs?: number;
  /** Longest blocking wait on an empty inbox, s. Default 1. */
  waitS?: number;
  logger?: Logger;
  onMoved?: (report: MovedReport) => void;
  /** The lease was taken (true) or lost/given up (false), with this mover's token. */
  onLease?: (held: boolean, token: string) => void;
}

const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2_000;
/** Job writes sent together, at most (see `write`). */
const PIPELINE = 16;

export class InboxMover {
  private readonly token = randomUUID();
  private readonly batch: number;
  private readonly leaseMs: number;
  private readonly waitS: number;
  /** Stopping, once the inbox is empty or at this time (ms), whichever comes first. */
  private drainUntil: number | null = null;
  private held = false;
  private heldUntil = 0;
  private renewer: NodeJS.Timeout | null = null;
  private loop: Promise<void> | null = null;
  private backoffMs = 0;
  private wake: (() => void) | null = null;

  constructor(private readonly opts: MoverOptions) {
    this.batch = opts.batch ?? 200;
    this.leaseMs = opts.leaseMs ?? 5_000;
    this.waitS = opts.waitS ?? 1;
  }

  get holdsLease(): boolean {
    return this.held && Date.now() < this.heldUntil;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /**
   * Stops, and gives the lease up: as the lease holder, once the inbox is empty (the last deliveries a stopping
   * listener acknowledged are jobs before it exits) or `drainMs` have passed; otherwise after the batch under way.
   */
  async stop(drainMs = 0): Promise<void> {
    this.drainUntil = Date.now() + drainMs;
    this.wake?.();
    // A blocking wait ends with its connection.
    this.opts.waiter.disconnect();
    await this.loop;
    if (this.renewer) clearInterval(this.renewer);
    if (this.held) {
      this.setHeld(false);
      const cmds = inboxCommands(this.opts.producer.client);
      await cmds.inboxRelease(this.opts.keys.lease, this.token).catch(() => undefined);
    }
  }

  /** Stopping, and the time given to move what is left has passed. */
  private drainOver(): boolean {
    return this.drainUntil !== null && Date.now() >= this.drainUntil;
  }

  private setHeld(held: boolean, until = 0): void {
    const changed = held !== this.held;
    this.held = held;
    this.heldUntil = until;
    if (changed) this.opts.onLease?.(held, this.token);
  }

  /** Takes or extends the lease; true while this mover holds it. */
  private async hold(): Promise<boolean> {
    const asked = Date.now();
    const cmds = inboxCommands(this.opts.producer.client);
    const got = (await cmds.inboxHold(this.opts.keys.lease, this.token, this.leaseMs)) === 1;
    // Counted from the request, not the answer: the lease may have started before the answer came back.
    this.setHeld(got, got ? asked + this.leaseMs : 0);
    return got;
  }

  private async run(): Promise<void> {
    const { keys, producer, waiter } = this.opts;
    const cmds = inboxCommands(producer.client);
    this.renewer = setInterval(() => {
      if (this.held) this.hold().catch(() => undefined);
    }, this.leaseMs / 3);
    this.renewer.unref();
    /** The next batch, claimed by the last `finish`; null: claim it. */
    let claimed: string[] | null = null;
    while (!this.drainOver()) {
      try {
        if (!producer.health().ready) {
          // Connecting, or Redis is down: nothing to try yet (the producer logs why).
          await this.pause(RETRY_MIN_MS);
          continue;
        }
        if (!this.holdsLease) {
          // What the last finish claimed was claimed under a lease since lost: another mover may have it now.
          claimed = null;
          if (!(await this.hold())) {
            // Stopping: the mover that holds the lease moves the rest.
            if (this.drainUntil !== null) break;
            await this.pause(this.leaseMs / 4);
            continue;
          }
        }
        const entries = claimed ?? (await cmds.inboxClaim(keys.inbox, keys.moving, keys.lease, this.token, this.batch));
        claimed = null;
        if (entries.length === 0) {
          if (this.drainUntil !== null) break;
          await waiter.blmove(keys.inbox, keys.moving, 'LEFT', 'RIGHT', this.waitS);
          continue;
        }
        const report = await this.write(entries);
        claimed = await cmds.inboxFinish(keys.inbox, keys.moving, keys.lease, this.token, this.batch, entries.length);
        this.backoffMs = 0;
        this.opts.onMoved?.(report);
      } catch (err) {
        claimed = null;
        if (this.drainOver()) break;
        const message = (err as Error).message;
        if (message.includes(LEASE_LOST)) {
          this.setHeld(false);
          this.opts.logger?.warn('inbox mover: lease lost; another mover takes over');
          continue;
        }
        this.backoffMs = Math.min(RETRY_MAX_MS, Math.max(RETRY_MIN_MS, this.backoffMs * 2));
        // Stopping: the blocking wait ends with its connection closed, which is no failure.
        if (this.drainUntil === null) {
          this.opts.logger?.warn({ err: message, retryInMs: this.backoffMs }, 'inbox mover: batch not moved; retrying');
        }
        await this.pause(this.backoffMs);
      }
    }
  }

  /** Writes every entry as a job; rejects if any write failed (the batch stays in `moving`). */
  private async write(entries: string[]): Promise<MovedReport> {
    const report: MovedReport = { queued: 0, duplicate: 0, lagsMs: [] };
    const writeOne = async (entry: string) => {
      let job: ReturnType<typeof decodeEntry>;
      try {
        job = decodeEntry(entry);
      } catch (err) {
        // Not written by a listener: nothing to make a job of. Logged whole, then dropped with the batch.
        this.opts.logger?.error({ err: (err as Error).message, entry }, 'inbox mover: entry dropped');
        return;
      }
      const result = await this.opts.producer.enqueue(job);
      if (result.duplicate) report.duplicate++;
      else report.queued++;
      const receivedMs = Date.parse(job.data.receivedAt);
      if (Number.isFinite(receivedMs)) report.lagsMs.push(Date.now() - receivedMs);
    };
    // A few jobs at a time: Redis runs a client's pipelined commands back to back, and a long run of job scripts
    // would hold up the listeners' inbox writes (their acknowledgements) behind it.
    for (let i = 0; i < entries.length; i += PIPELINE) {
      const settled = await Promise.allSettled(entries.slice(i, i + PIPELINE).map(writeOne));
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
    }
    return report;
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}
