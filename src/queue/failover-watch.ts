/**
 * The Sentinels' account of a failover, heard early enough to stop confirming writes on the old master.
 *
 * ioredis follows a failover when the Sentinels announce its end (`+switch-master`). Between the promotion of a
 * replica (`REPLICAOF NO ONE`) and that announcement, the old master still takes writes, and another replica still
 * confirms them (`WAIT`); then both resynchronise from the new master and drop them. Measured here with
 * `SENTINEL FAILOVER` at 200 deliveries/s and `REDIS_WAIT_REPLICAS=1`: 181 acknowledged deliveries lost.
 *
 * So the producer listens to every Sentinel itself: from `+try-failover` or `+selected-slave` (a Sentinel starts a
 * failover; the promotion comes at its next timer tick, about 100 ms later) it confirms nothing more on the current
 * connection, and deliveries go to the spool. It confirms again once the connection is to the new master that
 * `+switch-master` named, at once after `-failover-abort-*`, and in any case after `HALT_LIMIT_MS`.
 * Written by hand: ioredis's own failover detector listens to `+switch-master` only.
 */
import { isIP } from 'node:net';
import { Redis, type RedisOptions } from 'ioredis';
import type { RedisAddress, RedisTopology } from '../config/config.ts';
import { targetOf } from './confirm.ts';
import { sentinelOptions } from './connection.ts';

/** The longest halt: a failover that neither ends nor aborts by then (Sentinels gone mid-way) stops holding writes. */
export const HALT_LIMIT_MS = 60_000;

const CHANNELS = ['+try-failover', '+selected-slave', '+failover-state-send-slaveof-noone', '+switch-master'];
const ABORTS = '-failover-abort-*';

type SentinelSettings = Extract<RedisTopology, { kind: 'sentinel' }>;

export class FailoverWatch {
  private readonly subscribers: Redis[];
  /** Since when writes are not confirmed (0: they are), and the master to wait for, once announced. */
  private haltedAt = 0;
  private newMaster: RedisAddress | null = null;
  /** The connection's epoch when `+switch-master` was heard (see `targetOf`). */
  private epochAtSwitch = 0;

  constructor(
    private readonly settings: SentinelSettings,
    /** The connection whose writes are confirmed (through the Sentinels, to the master of the moment). */
    private readonly connection: Redis,
    /** Called when a halt starts (`true`) or ends (`false`). */
    private readonly onChange: (halted: boolean, why: string) => void = () => undefined,
  ) {
    this.subscribers = settings.sentinels.map((address) => this.subscribe(address));
  }

  private subscribe(address: RedisAddress): Redis {
    const options: RedisOptions = {
      ...sentinelOptions(this.settings, address, 'failover-watch'),
      maxRetriesPerRequest: null,
      retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
    };
    const client = new Redis(options);
    client.on('error', () => undefined); // a Sentinel down is the other Sentinels' business
    void client.subscribe(...CHANNELS).catch(() => undefined);
    void client.psubscribe(ABORTS).catch(() => undefined);
    client.on('message', (channel: string, message: string) => this.heard(channel, message));
    client.on('pmessage', (_pattern: string, channel: string, message: string) => this.heard(channel, message));
    return client;
  }

  /**
   * Events name the instance first (`master <name> <ip> <port>`, or `slave <ip>:<port> <ip> <port> @ <name> …`);
   * `+switch-master` is `<name> <old ip> <old port> <new ip> <new port>`.
   */
  private heard(channel: string, message: string): void {
    const words = message.split(' ');
    const name =
      channel === '+switch-master' ? words[0] : words[0] === 'master' ? words[1] : words[words.indexOf('@') + 1];
    if (name !== this.settings.masterName) return;
    if (channel === '+switch-master') {
      if (this.haltedAt === 0) this.halt(channel);
      this.newMaster = { host: words[3] ?? '', port: Number(words[4]) };
      this.epochAtSwitch = targetOf(this.connection).epoch;
    } else if (channel.startsWith('-failover-abort')) {
      this.resume(channel);
    } else if (this.haltedAt === 0) {
      this.halt(channel);
    }
  }

  private halt(why: string): void {
    this.haltedAt = Date.now();
    this.newMaster = null;
    this.onChange(true, why);
  }

  private resume(why: string): void {
    if (this.haltedAt === 0) return;
    this.haltedAt = 0;
    this.newMaster = null;
    this.onChange(false, why);
  }

  /**
   * Whether a write must not be confirmed now: a failover is under way, and the connection is not yet to the master
   * it announced.
   */
  halted(): boolean {
    const connection = this.connection;
    if (this.haltedAt === 0) return false;
    if (Date.now() - this.haltedAt > HALT_LIMIT_MS) {
      this.resume('no end of the failover was heard in time');
      return false;
    }
    const master = this.newMaster;
    if (master === null || connection.status !== 'ready') return true;
    const { remoteAddress, remotePort } = connection.stream ?? {};
    // Announced by address: the connection is to it. By host name (announce-hostnames): the connection was made
    // again since the announcement, and a new connection asks the Sentinels for the master.
    const there =
      isIP(master.host) !== 0
        ? remotePort === master.port && sameHost(remoteAddress, master.host)
        : targetOf(connection).epoch > this.epochAtSwitch;
    if (there) {
      this.resume('connected to the new master');
      return false;
    }
    return true;
  }

  close(): void {
    for (const subscriber of this.subscribers) subscriber.disconnect();
  }
}

function sameHost(remote: string | undefined, announced: string): boolean {
  return remote === announced || remote === `::ffff:${announced}`;
}
