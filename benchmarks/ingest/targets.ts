/**
 * The ingest benchmark's targets, each its own process on a free 127.0.0.1 port against the private Redis: the
 * listener (with or without a signing key) and the reference servers (bare, floor, naive, naive-nolog).
 */

import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { FLOOR_KEY } from '../lib/bodies.ts';
import { baseEnv, makeTempDir, waitForHttp200 } from '../lib/processes.ts';
import type { PrivateRedis } from '../lib/redis.ts';
import { freePort } from '../lib/redis-server.ts';
import {
  jobCount,
  type Service,
  spoolDrained,
  spooledSoFar,
  startReferenceServer,
  startService,
  stopper,
} from '../lib/service.ts';
import { moveLag } from './move-lag.ts';
import type { TargetName } from './options.ts';

export interface Target {
  name: TargetName;
  url: string;
  pid: number | undefined;
  /** Listener: its BullMQ queue. */
  queueName?: string;
  signKey?: string;
  /** Jobs (listener, naive) or list entries (floor) in Redis once the listener's spool is empty; null for bare. */
  countWrites(): Promise<number | null>;
  /** The same count as it is right now, without waiting for a spool (polled to see when the last job appears). */
  countNow(): Promise<number | null>;
  /** Listener: deliveries answered from the local spool since it started (its metrics); null for the others. */
  spooled(): Promise<number | null>;
  /** Stops the target; returns a description if it had died on its own before that, else null. */
  stop(): Promise<string | null>;
}

export async function startTarget(name: TargetName, redis: PrivateRedis): Promise<Target> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // Each listener gets its own spool directory (the default ./spool is locked by one process at a time).
  const spoolDir = makeTempDir('sellsy-webhooks-bench-spool-');
  const env = { ...baseEnv(), PORT: String(port), HOST: '127.0.0.1', REDIS_URL: redis.url, SPOOL_DIR: spoolDir };
  let service: Service;
  let queueName: string | undefined;
  let signKey: string | undefined;
  if (name === 'listener' || name === 'listener-signed') {
    queueName = `bench-${randomBytes(4).toString('hex')}`;
    signKey = name === 'listener-signed' ? randomBytes(16).toString('hex') : undefined;
    // Default LOG_LEVEL (info): one log line per delivery, as in production; stdout (the log) is discarded.
    service = startService('listen', {
      ...env,
      QUEUE_NAME: queueName,
      ...(signKey ? { SELLSY_SIGN_KEY: signKey } : {}),
    });
  } else {
    if (name === 'naive' || name === 'naive-nolog') queueName = `bench-${name}-${randomBytes(4).toString('hex')}`;
    service = startReferenceServer(name, { ...env, ...(queueName ? { QUEUE_NAME: queueName } : {}) });
  }
  const { child } = service;
  await waitForHttp200(`${url}/readyz`, child, 20_000, () => `${name} stderr:\n${service.output()}`);
  // One connection for every count of the run: the saturation phase polls the count every few milliseconds.
  const queue =
    queueName === undefined ? null : new Queue(queueName, { connection: { host: '127.0.0.1', port: redis.port } });
  const countNow = async (): Promise<number | null> => {
    if (name === 'floor') return redis.client.llen(FLOOR_KEY);
    return queue === null ? null : jobCount(queue);
  };
  const isListener = name === 'listener' || name === 'listener-signed';
  const stop = stopper(service, name, spoolDir);
  return {
    name,
    url,
    pid: child.pid,
    queueName,
    signKey,
    countNow,
    async countWrites() {
      // Deliveries answered from the spool are jobs only once drained (within a second or so).
      if (isListener) await spoolDrained(url, 10_000);
      return countNow();
    },
    async spooled() {
      return isListener ? spooledSoFar(url) : null;
    },
    ...(isListener && queueName !== undefined
      ? { moveLag: (sinceMs: number) => moveLag(redis.client, 'bull', queueName as string, sinceMs) }
      : {}),
    async stop() {
      await queue?.close().catch(() => undefined);
      return stop();
    },
  };
}
