/**
 * The producer: writes one delivery as one BullMQ job, or fails fast.
 *
 * Guarantee: `enqueue` resolves only once Redis has accepted the job (or reported it a duplicate), and it always
 * settles within `ENQUEUE_TIMEOUT_MS`: with Redis down it rejects at once with `EnqueueError('not_connected')`,
 * with Redis frozen it rejects with `EnqueueError('timeout')`. A job whose write timed out may still land later;
 * its deduplication id makes a retry of the same delivery harmless.
 *
 * `Producer` is what the listener calls: this class alone with `SPOOL_MAX_BYTES=0`, else wrapped by the spool
 * (src/spool/spooling-producer.ts), which catches `EnqueueError`, stores the delivery, and drains it later through
 * this producer. The spool knows it only as a `QueueWriter`.
 */
import { type JobsOptions, Queue } from 'bullmq';
import { Cluster, ReplyError } from 'ioredis';
import { EnqueueError } from '../errors.ts';
import { GroupConfirm, needsConfirmation, targetOf, type WriteTarget } from './confirm.ts';
import {
  connectionsOf,
  createConnection,
  pendingCommands,
  type RedisClient,
  slotMaster,
  slotOf,
} from './connection.ts';
import type { WebhookJob, WebhookJobData } from './contract.ts';
import { inspectDurability } from './durability.ts';
import { FailoverWatch } from './failover-watch.ts';
import { encodeEntry, inboxKeys } from './inbox.ts';
import { type BullmqProducerOptions, jobOptionsOf } from './producer-options.ts';
import { RedisSilence } from './silence.ts';
import type { EnqueueResult, QueueWriter, RedisHealth } from './writer.ts';

/**
 * Commands sent to Redis and not answered yet, timed-out ones included: a frozen Redis keeps its connection open, so
 * the client keeps every command until Redis answers. Past this many, new deliveries fail at once instead of growing
 * memory without bound (about 2 KB each, so some 20 MB at most).
 */
export const MAX_PENDING_COMMANDS = 10_000;

/** Delay before retrying a Queue whose initialisation failed on an open connection. */
const QUEUE_RETRY_MS = 500;
/** Delay before checking again for WAITAOF support (REDIS_WAIT_AOF). */
const WAIT_AOF_RETRY_MS = 5_000;

interface PendingAdd {
  name: string;
  data: WebhookJobData;
  opts: JobsOptions;
  /** `target`: the connection the write went through, for its confirmation (null when none is needed). */
  resolve: (added: { jobId: string; target: WriteTarget | null }) => void;
  reject: (err: unknown) => void;
}

export class BullmqProducer implements QueueWriter {
  readonly client: RedisClient;
  /** Deliveries of the current event-loop turn, sent when it ends. */
  private turn: PendingAdd[] = [];
  private queue: Queue | null = null;
  private queueReady = false;
  private lastError: string | null = null;
  private closed = false;
  private readonly baseOpts: JobsOptions;
  /** Whether Redis answers the writes (src/queue/silence.ts). */
  private readonly silence: RedisSilence;
  /** With `waitAof` or `waitReplicas`: the WAITAOF or WAIT each write waits for, shared by those sent before it. */
  private readonly confirm: GroupConfirm | null;
  /** On a Cluster: the hash slot of the queue's keys, once known (its master is where the writes go). */
  private slot: number | null = null;
  /** With Sentinel: a failover under way, heard from the Sentinels; no write is confirmed meanwhile. */
  private readonly failover: FailoverWatch | null;
  /** `ACK_WRITE=inbox`: the inbox key the deliveries are pushed to, instead of BullMQ jobs. */
  private readonly inbox: string | null;

  constructor(private readonly opts: BullmqProducerOptions) {
    this.baseOpts = jobOptionsOf(opts);
    this.inbox = opts.inbox ? inboxKeys(opts.prefix, opts.queueName).inbox : null;
    this.client = createConnection(opts.redis, {
      role: 'fail-fast',
      name: `${opts.queueName}:${opts.role ?? 'producer'}`,
      commandTimeoutMs: Math.max(opts.timeoutMs, opts.commandTimeoutMs ?? 0),
    });
    this.silence = new RedisSilence(this.client);
    this.client.on('error', (err: Error) => {
      this.lastError = err.message;
      opts.onError?.(err);
    });
    this.client.on('ready', () => this.onConnectionReady());
    this.failover =
      opts.redis.kind === 'sentinel' && !(this.client instanceof Cluster)
        ? new FailoverWatch(opts.redis, this.client, (halted, why) => {
            this.lastError = halted ? `a Sentinel failover is under way (${why}): deliveries are spooled` : null;
          })
        : null;
    const confirm = { aof: opts.waitAof ?? false, replicas: opts.waitReplicas ?? 0 };
    this.confirm = needsConfirmation(confirm)
      ? new GroupConfirm({ ...confirm, timeoutMs: opts.confirmTimeoutMs ?? opts.timeoutMs }, () =>
          this.silence.progressed(),
        )
      : null;
  }

  /**
   * BullMQ's Queue waits for Redis before its first command settles, even without an offline queue; so the Queue
   * is created only once the connection is ready, and requests before that fail fast instead of waiting.
   */
  private onConnectionReady(): void {
    if (this.closed) return;
    this.lastError = null;
    this.silence.reset();
    this.ensureQueue();
    if (this.opts.onReady) {
      inspectDurability(this.client, this.opts.waitAof).then(this.opts.onReady, (err: Error) =>
        this.opts.onError?.(err),
      );
    }
  }

  /**
   * Creates the Queue if there is none. If its initialisation fails while the connection stays open (Redis frozen or
   * slow during BullMQ's start-up commands), no new `ready` event will come: retry on a timer instead.
   */
  private ensureQueue(): void {
    if (this.closed || this.queue !== null || this.client.status !== 'ready') return;
    if (this.opts.waitAof) {
      // Without WAITAOF the promise of REDIS_WAIT_AOF cannot be kept: the queue stays closed (deliveries go to the
      // spool) and the check is retried, so that turning AOF on (CONFIG SET appendonly yes) is enough.
      this.client.call('WAITAOF', '1', '0', '1').then(
        () => this.createQueue(),
        (err: Error) => {
          const message = `REDIS_WAIT_AOF=true needs WAITAOF (Redis >= 7.2 or Valkey >= 8) with appendonly yes; this Redis refused it (${err.message}). Upgrade Redis or turn AOF on, or set REDIS_WAIT_AOF=false and use appendfsync always on an older Redis.`;
          if (message !== this.lastError) this.opts.onError?.(new Error(message));
          this.lastError = message;
          setTimeout(() => this.ensureQueue(), WAIT_AOF_RETRY_MS).unref();
        },
      );
      return;
    }
    this.createQueue();
  }

  private createQueue(): void {
    if (this.closed || this.queue !== null || this.client.status !== 'ready') return;
    this.lastError = null;
    const queue = new Queue(this.opts.queueName, { connection: this.client, prefix: this.opts.prefix });
    queue.on('error', (err: Error) => {
      this.lastError = err.message;
      this.opts.onError?.(err);
    });
    this.queue = queue;
    // Where the confirmations go on a Cluster: the master of the queue's slot.
    const slot =
      this.confirm !== null
        ? slotOf(this.client, this.probeKey).then((n) => {
            this.slot = n;
          })
        : undefined;
    Promise.all([queue.waitUntilReady(), slot]).then(
      () => {
        if (this.queue === queue) this.queueReady = true;
      },
      (err: Error) => {
        this.lastError = err.message;
        if (this.queue === queue) this.queue = null;
        void queue.close().catch(() => undefined);
        setTimeout(() => this.ensureQueue(), QUEUE_RETRY_MS).unref();
      },
    );
  }

  /** `ENQUEUE_TIMEOUT_MS`: the deadline of a write, unless the caller gives its own. */
  get timeoutMs(): number {
    return this.opts.timeoutMs;
  }

  /**
   * Redis has been sitting on writes for longer than `ms` without answering any: frozen, overloaded or cut off.
   * A caller with a tighter budget than the command deadline can go elsewhere at once instead of waiting. Once a
   * write failed without an answer, Redis counts as stalled until a PING gets one.
   */
  stalled(ms: number): boolean {
    return this.silence.stalled(ms);
  }

  /**
   * Writes one job. Settles within `ENQUEUE_TIMEOUT_MS`; after a timeout the write may still land, and the job's ids
   * make writing the same delivery again harmless.
   *
   * `silenceMs` (the ack budget, when a spool can take over) fails the write earlier, as soon as Redis has answered
   * nothing at all for that long: Redis is stuck, not busy. While Redis keeps answering other writes (a busy moment,
   * a burst queued behind a pipeline), the write keeps waiting, up to `ENQUEUE_TIMEOUT_MS`: ordinary jitter does not
   * send deliveries to the spool.
   *
   * `timeoutMs` replaces `ENQUEUE_TIMEOUT_MS` for this write (the drain's batches of large records need longer; the
   * connection's own deadline, `commandTimeoutMs`, must be at least as long).
   */
  async enqueue(job: WebhookJob, silenceMs?: number, timeoutMs = this.opts.timeoutMs): Promise<EnqueueResult> {
    const queue = this.queue;
    if (queue === null || !this.queueReady || this.client.status !== 'ready') {
      throw new EnqueueError(`Redis is not connected (${this.client.status})`, 'not_connected');
    }
    if (this.failover?.halted()) {
      throw new EnqueueError('a Sentinel failover is under way: the master may change', 'not_connected');
    }
    const backlog = pendingCommands(this.client);
    if (backlog >= (this.opts.maxPendingCommands ?? MAX_PENDING_COMMANDS)) {
      // A connection this far behind is frozen or half-open (Redis host gone without a reset): destroy the socket,
      // which rejects what it holds and frees the memory, and let ioredis reconnect. (`disconnect()` only half-closes
      // the socket, and a frozen peer never completes the close.)
      for (const connection of connectionsOf(this.client)) connection.stream?.destroy();
      throw new EnqueueError(`${backlog} commands were still waiting for Redis; reconnecting`, 'backlog');
    }
    const data: WebhookJobData = job.data;
    const opts: JobsOptions = { ...this.baseOpts, jobId: data.deliveryId };
    if (this.opts.dedupWindowSeconds > 0) {
      opts.deduplication = { id: data.dedupKey, ttl: this.opts.dedupWindowSeconds * 1000 };
    }
    let timer: NodeJS.Timeout | undefined;
    const started = Date.now();
    const limit = timeoutMs;
    const step = silenceMs !== undefined && silenceMs < limit ? silenceMs : limit;
    const deadline = new Promise<never>((_, reject) => {
      const check = () => {
        // Timers run before I/O in each event-loop turn: on a busy loop a timer can fire while Redis's answer
        // already waits on the socket. Giving I/O one more phase (setImmediate runs after it) counts only Redis's
        // own slowness, not the listener's.
        setImmediate(() => {
          const now = Date.now();
          const waited = now - started;
          if (waited < limit && now - this.silence.progressAt < step) {
            timer = setTimeout(check, Math.min(this.silence.untilSilent(step), limit - waited));
            return;
          }
          if (written.added) {
            // Redis took the job; its confirmation (WAIT, WAITAOF) is what did not come in time.
            const what = this.opts.waitReplicas ? `${this.opts.waitReplicas} replica(s)` : 'the fsync';
            reject(
              new EnqueueError(
                `Redis took the job, but ${what} did not confirm it within ${waited} ms`,
                this.opts.waitReplicas ? 'replicas' : 'timeout',
              ),
            );
            return;
          }
          const why =
            waited < limit
              ? `Redis answered nothing for ${step} ms`
              : `Redis did not confirm the job within ${limit} ms`;
          reject(new EnqueueError(why, 'timeout'));
        });
      };
      // When Redis already sits on earlier writes, this one is checked when their silence reaches `step`, not a full
      // `step` after it was sent: at a freeze's onset, only the first delivery waits the whole budget.
      timer = setTimeout(check, this.silence.untilSilent(step));
    });
    const written = { added: false };
    const write = this.write(queue, job.name, data, opts, written);
    try {
      const jobId = await Promise.race([write, deadline]);
      const duplicate = jobId !== data.deliveryId;
      if (duplicate && this.opts.onDuplicate)
        await this.within(this.opts.onDuplicate(job, this.client), started, limit);
      return { jobId, duplicate };
    } catch (err) {
      if (err instanceof EnqueueError) throw err;
      const message = (err as Error).message;
      const reason = /timed out/i.test(message) ? 'timeout' : 'redis_error';
      throw new EnqueueError(`Redis refused the job: ${message}`, reason, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Settles as `work` does, or rejects once `limit` ms from `started` ran out (the write's own deadline). Redis has
   * just answered the write: the silence budget does not apply.
   */
  private async within<T>(work: Promise<T>, started: number, limit: number): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const left = Math.max(limit - (Date.now() - started), 1);
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new EnqueueError(`Redis did not confirm the job within ${limit} ms`, 'timeout')),
        left,
      );
    });
    try {
      return await Promise.race([work, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One `queue.add` per delivery, sent together with the others of the same event-loop turn once the turn's I/O is
   * done (setImmediate). This took the most deliveries per second end to end (docs/benchmarks.md): one `addBulk` per
   * turn took fewer (BullMQ wraps it in MULTI/EXEC, and the listener and Redis take turns), and each `add` sent from
   * its request handler costs more CPU per delivery.
   */
  private write(
    queue: Queue,
    name: string,
    data: WebhookJobData,
    opts: JobsOptions,
    /** `added`: Redis took the job, and only its confirmation is awaited. */
    written: { added: boolean },
  ): Promise<string> {
    const added = new Promise<{ jobId: string; target: WriteTarget | null }>((resolve, reject) => {
      if (this.turn.push({ name, data, opts, resolve, reject }) === 1) setImmediate(this.sendTurn, queue);
    });
    const confirm = this.confirm;
    // A failover that started before the confirmation came: the write may be on a master about to be replaced.
    const checked = (jobId: string) => {
      if (this.failover?.halted()) {
        throw new EnqueueError('a Sentinel failover started before the write was confirmed', 'replicas');
      }
      return jobId;
    };
    return added.then(({ jobId, target }) => {
      if (confirm === null) return checked(jobId);
      written.added = true;
      if (target === null) throw new EnqueueError('the node of the queue is not known yet', 'not_connected');
      return confirm.after(target).then(() => checked(jobId));
    });
  }

  /** The connection that carries the queue's writes: the client, or on a Cluster the master of the queue's slot. */
  private writeTarget(): WriteTarget | null {
    const node = slotMaster(this.client, this.slot);
    return node ? targetOf(node) : null;
  }

  private readonly sendTurn = (queue: Queue): void => {
    const turn = this.turn;
    this.turn = [];
    // The connection the turn's writes go through, as it is when they are sent: their confirmation must go there.
    const target = this.confirm !== null ? this.writeTarget() : null;
    // ioredis writes each command to the socket on its own: one system call per delivery. Corked, the commands of
    // the turn leave in one writev, and Redis reads them in one go. BullMQ sends each command a few promise steps
    // after `add` is called: the uncork waits for the microtask queue to drain (a nextTick scheduled from a
    // microtask runs once the queue is empty). Fewer system calls: less CPU per delivery in the listener and in
    // Redis (docs/benchmarks.md).
    if (this.inbox !== null) {
      this.pushTurn(turn, this.inbox, target);
      return;
    }
    const stream = turn.length > 1 && !(this.client instanceof Cluster) ? this.client.stream : undefined;
    if (stream) {
      stream.cork();
      void Promise.resolve().then(() => process.nextTick(() => stream.uncork()));
    }
    for (const { name, data, opts, resolve, reject } of turn) {
      this.silence.sent();
      queue.add(name, data, opts).then(
        (job) => {
          this.silence.answered();
          resolve({ jobId: job.id ?? data.deliveryId, target });
        },
        (err: unknown) => {
          this.silence.failed(err);
          reject(err);
        },
      );
    }
  };

  /** `ACK_WRITE=inbox`: the turn's deliveries in one `RPUSH` to the inbox; the mover makes them jobs. */
  private pushTurn(turn: PendingAdd[], key: string, target: WriteTarget | null): void {
    this.silence.sent();
    this.client.rpush(key, ...turn.map(encodeEntry)).then(
      () => {
        this.silence.answered();
        for (const p of turn) p.resolve({ jobId: p.data.deliveryId, target });
      },
      (err: unknown) => {
        this.silence.failed(err);
        for (const p of turn) p.reject(err);
      },
    );
  }

  health(): RedisHealth {
    return {
      status: this.client.status,
      ready: this.queueReady && this.client.status === 'ready',
      lastError: this.lastError,
    };
  }

  /** A key in the queue's hash slot (on a Cluster, on the node of the queue). */
  private get probeKey(): string {
    return `${this.opts.prefix}:${this.opts.queueName}:write-probe`;
  }

  /**
   * Whether Redis takes a write now: within `ENQUEUE_TIMEOUT_MS`, sets a key that expires within a second. A Redis
   * that answers PING but refuses writes (out of memory, read-only replica, failed snapshot) fails this; the drain
   * uses it to tell an entry Redis cannot take from a Redis that takes nothing. A connection that closes under the
   * probe (Redis drops the connection of a command it refuses, and the probe can be sent before the close is seen)
   * is no answer: the probe waits for the reconnection and asks again.
   */
  async probeWrite(): Promise<boolean> {
    const deadline = Date.now() + this.opts.timeoutMs;
    const key = this.probeKey;
    while (!this.closed && Date.now() <= deadline) {
      if (this.client.status === 'ready') {
        try {
          return (await this.client.set(key, '1', 'PX', 1000)) === 'OK';
        } catch (err) {
          if (err instanceof ReplyError) return false;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return false;
  }

  async ping(): Promise<boolean> {
    if (this.client.status !== 'ready') return false;
    try {
      return (await this.client.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.failover?.close();
    const queue = this.queue;
    this.queue = null;
    this.queueReady = false;
    if (queue) await queue.close().catch(() => undefined);
    if (this.client.status === 'ready') await this.client.quit().catch(() => this.client.disconnect());
    else this.client.disconnect();
  }
}
