/**
 * Group commit of the producer's confirmations: `REDIS_WAIT_AOF` (Redis has fsynced the write to its append-only
 * file) and `REDIS_WAIT_REPLICAS` (that many replicas have it). One `WAIT N` or `WAITAOF 1 N` covers every write sent
 * before it on the same connection, so the writes waiting for a confirmation share the next one, and only one is in
 * flight per connection at a time.
 *
 * Both commands count the writes of the connection they are sent on. So a write is confirmed only by a command sent
 * on the connection that carried it, before that connection closed: after a reconnection (a Sentinel failover, a
 * Redis restart) a new connection has written nothing, and would "confirm" at once writes the old master may never
 * have passed on. Each write notes its connection (`WriteTarget`) and the connection's epoch (its count of closes);
 * a write whose connection closed or changed since is refused (`EnqueueError('replicas')`), and the spool keeps it.
 */
import type { Redis } from 'ioredis';
import { EnqueueError } from '../errors.ts';

export interface ConfirmSettings {
  /** `REDIS_WAIT_AOF`: the master has fsynced the write (`WAITAOF 1 N`). */
  aof: boolean;
  /** `REDIS_WAIT_REPLICAS`: this many replicas have the write (`WAIT N`, or `WAITAOF 1 N`). */
  replicas: number;
  /** Redis's own deadline for the confirmation: the ack budget for the listener's writes. */
  timeoutMs: number;
}

/** The connection a write went through (on a Cluster, the node of the queue's slot), and its epoch then. */
export interface WriteTarget {
  connection: Redis;
  epoch: number;
}

/** Whether writes need a confirmation beyond the master's answer. */
export function needsConfirmation(settings: Pick<ConfirmSettings, 'aof' | 'replicas'>): boolean {
  return settings.aof || settings.replicas > 0;
}

const epochs = new WeakMap<Redis, { closes: number }>();

/** `connection` with its current epoch: the number of times it closed since it was first seen here. */
export function targetOf(connection: Redis): WriteTarget {
  let state = epochs.get(connection);
  if (state === undefined) {
    const counted = { closes: 0 };
    connection.on('close', () => {
      counted.closes++;
    });
    epochs.set(connection, counted);
    state = counted;
  }
  return { connection, epoch: state.closes };
}

interface Waiting {
  target: WriteTarget;
  done: () => void;
  fail: (err: unknown) => void;
}

export class GroupConfirm {
  /** Confirmations waiting for the next command, by connection, and the connections with one in flight. */
  private readonly waiting = new Map<Redis, Waiting[]>();
  private readonly inFlight = new Set<Redis>();

  constructor(
    private readonly settings: ConfirmSettings,
    /** Called when a confirmation command is answered (Redis is making progress). */
    private readonly onAnswer: () => void = () => undefined,
  ) {}

  /** Resolves once the next confirmation covers the writes sent through `target` before this call; rejects if not. */
  after(target: WriteTarget): Promise<void> {
    return new Promise<void>((done, fail) => {
      const list = this.waiting.get(target.connection);
      if (list) list.push({ target, done, fail });
      else this.waiting.set(target.connection, [{ target, done, fail }]);
      if (!this.inFlight.has(target.connection)) this.send(target.connection);
    });
  }

  private send(connection: Redis): void {
    const group = this.waiting.get(connection) ?? [];
    this.waiting.delete(connection);
    const epoch = targetOf(connection).epoch;
    const current: Waiting[] = [];
    for (const w of group) {
      if (w.target.epoch === epoch && connection.status === 'ready') current.push(w);
      else w.fail(new EnqueueError('the connection to Redis changed before the write was confirmed', 'replicas'));
    }
    if (current.length === 0) return;
    this.inFlight.add(connection);
    const { aof, replicas, timeoutMs } = this.settings;
    const timeout = String(Math.max(1, timeoutMs));
    const command = aof
      ? connection.call('WAITAOF', '1', String(replicas), timeout)
      : connection.call('WAIT', String(replicas), timeout);
    command
      .then(
        (reply) => {
          this.onAnswer();
          const [local, copies] = aof && Array.isArray(reply) ? reply.map(Number) : [1, Number(reply)];
          if ((local ?? 0) >= 1 && (copies ?? 0) >= replicas) {
            for (const w of current) w.done();
            return;
          }
          const err =
            (local ?? 0) < 1
              ? new EnqueueError(`Redis did not fsync its AOF within ${timeoutMs} ms`, 'timeout')
              : new EnqueueError(
                  `${copies} of the ${replicas} replicas REDIS_WAIT_REPLICAS asks for confirmed the write within ${timeoutMs} ms`,
                  'replicas',
                );
          for (const w of current) w.fail(err);
        },
        (err: unknown) => {
          for (const w of current) w.fail(err);
        },
      )
      .finally(() => {
        this.inFlight.delete(connection);
        if (this.waiting.has(connection)) this.send(connection);
      });
  }
}
