/**
 * The minimal worker: takes each job from the ingest queue, logs it and completes it.
 * Handlers, dead letters and replay build on this runtime.
 */
import { type Job, Worker } from 'bullmq';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import type { WebhookJobData } from '../queue/contract.ts';
import { createWorkerConnection } from '../queue/redis.ts';

export interface RunningWorker {
  worker: Worker<WebhookJobData>;
  close(): Promise<void>;
}

export function startWorker(config: Config, logger: Logger): RunningWorker {
  const connection = createWorkerConnection(config.redisUrl, `${config.queueName}:worker`);
  const log = logger.child({ component: 'worker' });
  const worker = new Worker<WebhookJobData>(
    config.queueName,
    async (job: Job<WebhookJobData>) => {
      const { data } = job;
      log.info(
        {
          jobId: job.id,
          deliveryId: data.deliveryId,
          event: job.name,
          account: data.account,
          relatedId: data.event?.relatedId ?? null,
          signature: data.signature.status,
          attempt: job.attemptsMade + 1,
          outcome: 'completed',
        },
        'job processed',
      );
    },
    { connection, prefix: config.queuePrefix, concurrency: config.worker.concurrency },
  );
  let lastError = '';
  worker.on('error', (err) => {
    if (err.message !== lastError) log.warn({ err: err.message }, 'worker connection error');
    lastError = err.message;
  });
  worker.on('ready', () => {
    lastError = '';
  });
  worker.on('failed', (job, err) => {
    log.error({ jobId: job?.id, event: job?.name, attempt: job?.attemptsMade, err: err.message }, 'job failed');
  });
  return {
    worker,
    async close() {
      await worker.close();
      connection.disconnect();
    },
  };
}
