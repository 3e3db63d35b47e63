/**
 * The Redis pub/sub channel that `sellsy-webhooks destinations reload` publishes on and every worker with a
 * `DESTINATIONS_FILE` listens to: `<QUEUE_PREFIX>:<QUEUE_NAME>:destinations:reload`.
 *
 * A subscribed connection can send nothing but (un)subscriptions, so the listener has a connection of its own
 * (`worker` role: it reconnects for ever, and ioredis subscribes again after each reconnection, through Sentinel to
 * the master of the moment). On a Cluster, a PUBLISH reaches the subscribers of every node through the cluster bus,
 * but Redis counts only those of the node that took it.
 */
import type { Config } from '../config/config.ts';
import { closeForGood, createConnection, type RedisClient, redisSettingsOf } from './connection.ts';

export function reloadChannel(config: Pick<Config, 'queuePrefix' | 'queueName'>): string {
  return `${config.queuePrefix}:${config.queueName}:destinations:reload`;
}

export interface ReloadListener {
  close(): void;
}

/**
 * Calls `onReload(message)` for each message on the channel; `onError` hears the connection's errors (its caller
 * decides how often to log them). Subscribes in the background: a worker starts while Redis is away, and hears
 * reloads once it is back (`PUBSUB NUMSUB` on the channel shows the workers that listen).
 */
export function listenForReloads(
  config: Pick<Config, 'redis' | 'queuePrefix' | 'queueName'>,
  onReload: (message: string) => void,
  onError: (err: Error) => void,
): ReloadListener {
  const channel = reloadChannel(config);
  const client = createConnection(redisSettingsOf(config), {
    role: 'worker',
    name: `${config.queueName}:destinations-reload`,
  });
  client.on('error', onError);
  client.on('message', (from: string, message: string) => {
    if (from === channel) onReload(message);
  });
  client.subscribe(channel).catch((err: Error) => {
    if (client.status !== 'end') onError(err);
  });
  return { close: () => closeForGood(client) };
}

/** Publishes a reload; the answer is how many subscribers took it (on a Cluster: those of one node). */
export async function publishReload(
  client: RedisClient,
  config: Pick<Config, 'queuePrefix' | 'queueName'>,
  message: string,
): Promise<number> {
  return client.publish(reloadChannel(config), message);
}
