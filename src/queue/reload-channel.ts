/**
 * The Redis pub/sub channel that `sellsy-webhooks destinations reload` publishes on and every worker with a
 * `DESTINATIONS_FILE` listens to: `<QUEUE_PREFIX>:<QUEUE_NAME>:destinations:reload`.
 *
 * A subscribed connection can send nothing but (un)subscriptions, so the listener has a connection of its own
 * (`worker` role: it reconnects for ever, and ioredis subscribes again after each reconnection, through Sentinel to
 * the master of the moment; on a Cluster, to a node of its choice, since the cluster bus carries each PUBLISH to every
 * node).
 */
import { Cluster } from 'ioredis';
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

/**
 * Publishes a reload; resolves to how many worker processes heard it. PUBLISH's own answer counts the subscribers
 * of the server that took it: all of them on one server or through Sentinel, but on a Cluster only those of one
 * node, while the cluster bus carries the message to every node. There, the listeners of every node are counted
 * (`PUBSUB NUMSUB`), just before publishing.
 */
export async function publishReload(
  client: RedisClient,
  config: Pick<Config, 'queuePrefix' | 'queueName'>,
  message: string,
): Promise<number> {
  const channel = reloadChannel(config);
  if (!(client instanceof Cluster)) return client.publish(channel, message);
  const counts = await Promise.all(
    client.nodes('all').map(async (node) => Number(((await node.pubsub('NUMSUB', channel)) as [string, number])[1])),
  );
  await client.publish(channel, message);
  return counts.reduce((sum, n) => sum + n, 0);
}
