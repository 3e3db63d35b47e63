/** Starts an in-process worker beside a test listener (same Redis, same queue), with its log lines captured. */
import type { Registry } from 'prom-client';
import { loadConfig } from '../../src/config/config.ts';
import type { HandlerMap } from '../../src/handlers/handler.ts';
import { createLogger } from '../../src/logger.ts';
import { type RunningWorker, startWorker } from '../../src/worker/worker.ts';
import { LogCapture, type TestListener } from './listener.ts';

export interface TestWorker extends RunningWorker {
  logs: Record<string, unknown>[];
}

export async function startTestWorker(
  listener: TestListener,
  env: Record<string, string> = {},
  handlers?: HandlerMap,
  registry?: Registry,
): Promise<TestWorker> {
  const workerEnv = {
    REDIS_URL: listener.config.redisUrl,
    QUEUE_NAME: listener.config.queueName,
    LOG_LEVEL: 'info',
    ...env,
  };
  const config = loadConfig(workerEnv);
  const capture = new LogCapture();
  const running = await startWorker(config, createLogger('info', capture), {
    // A reload of DESTINATIONS_FILE reads its secret variables where the configuration came from.
    env: workerEnv,
    ...(handlers ? { handlers } : {}),
    ...(registry ? { registry } : {}),
  });
  return { ...running, logs: capture.lines };
}

export const json = { 'content-type': 'application/json' };

/** A Sellsy JSON delivery about one record; `n` makes the body (and so the delivery) unique. */
export function recordBody(relatedId: string, n: number, corpId = '929'): string {
  return JSON.stringify({
    eventType: 'docslog',
    event: 'step',
    relatedtype: 'invoice',
    relatedid: relatedId,
    corpid: corpId,
    timestamp: String(1_700_000_000 + n),
  });
}
