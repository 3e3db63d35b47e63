/**
 * The pipeline benchmark as a whole: the private Redis, a fresh PostgreSQL schema, the worker and the listener, then
 * the warm-up, phase 1, the reference and phase 2; every process and the schema are gone when it returns or throws.
 */
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { post } from '../lib/load.ts';
import { waitForQuiet } from '../lib/machine.ts';
import { baseEnv, ensureBuilt, makeTempDir, removeTempDir, stopChild, waitForHttp200 } from '../lib/processes.ts';
import { redisVersion as redisVersionOf, startPrivateRedis } from '../lib/redis.ts';
import { freePort } from '../lib/redis-server.ts';
import { jobCount, type Service, startService } from '../lib/service.ts';
import { type Db, openDb, waitForRows, waitForTable } from './db.ts';
import type { PipelineOptions } from './options.ts';
import {
  type Context,
  directInsertPhase,
  latencyPhase,
  referencePoolSize,
  throughputPhase,
  WARMUP_EVENTS,
  workerAppName,
} from './phases.ts';
import { report } from './report.ts';
import type { PipelineResult } from './results.ts';

/** Runs the warm-up, phase 1, the reference and phase 2; stops everything it started on every path. */
export async function runPipelineBenchmark(
  opts: PipelineOptions,
): Promise<{ result: PipelineResult; report: string[] }> {
  ensureBuilt(false);
  const busyBeforePct = (await waitForQuiet(opts.quietWaitS)).busy;
  // Redis first: the exit hook of lib/processes.ts (SIGKILL to every child) is then installed before openDb's (DROP
  // SCHEMA), and runs first, so the schema is dropped after the worker is gone.
  const redis = await startPrivateRedis();
  let db: Db;
  try {
    db = await openDb(opts.databaseUrl);
  } catch (err) {
    await redis.destroy();
    throw err;
  }
  let listener: Service | undefined;
  let worker: Service | undefined;
  let queue: Queue | undefined;
  const spoolDir = makeTempDir('sellsy-webhooks-bench-spool-');
  try {
    const [version] = await db.query<{ v: string; sc: string }>(
      "SELECT current_setting('server_version') AS v, current_setting('synchronous_commit') AS sc",
    );
    const redisVersion = await redisVersionOf(redis.client);
    const queueName = `bench-pipeline-${randomBytes(4).toString('hex')}`;
    const common = { ...baseEnv(), REDIS_URL: redis.url, QUEUE_NAME: queueName };
    const jobQueue = new Queue(queueName, { connection: { url: redis.url } });
    queue = jobQueue;

    const workerEnv = {
      DATABASE_URL: opts.databaseUrl,
      DATABASE_SCHEMA: db.schema,
      WORKER_CONCURRENCY: String(opts.workerConcurrency),
      PGAPPNAME: workerAppName(db.schema),
    };
    const port = await freePort();
    const listenerUrl = `http://127.0.0.1:${port}`;
    const listenerEnv = { PORT: String(port), HOST: '127.0.0.1', SPOOL_DIR: spoolDir };
    if (opts.mode === 'start') {
      process.stderr.write(
        `bench: pipeline, schema ${db.schema}: starting the service (listener and worker, one process)\n`,
      );
      worker = listener = startService('start', { ...common, ...workerEnv, ...listenerEnv });
      await waitForTable(db, worker, 20_000);
    } else {
      process.stderr.write(`bench: pipeline, schema ${db.schema}: starting the worker and the listener\n`);
      // At warn, its few lines are kept for error messages.
      worker = startService('work', { ...common, ...workerEnv, LOG_LEVEL: 'warn' }, true);
      await waitForTable(db, worker, 20_000);
      listener = startService('listen', { ...common, ...listenerEnv });
    }
    const started = listener;
    await waitForHttp200(`${listenerUrl}/readyz`, started.child, 20_000, () => `listener:\n${started.output()}`);
    const ctx: Context = {
      opts,
      db,
      listenerUrl,
      worker,
      pids: {
        listener: listener.child.pid,
        // With `start`, one process: its CPU is counted once, as the listener's.
        worker: worker === listener ? undefined : worker.child.pid,
        redis: redis.pid,
        generator: process.pid,
      },
      jobsSoFar: () => jobCount(jobQueue),
    };

    process.stderr.write(`bench: pipeline warm-up, ${WARMUP_EVENTS} deliveries\n`);
    let nextId = 1;
    const warm = await post(listenerUrl, nextId, WARMUP_EVENTS, opts.connections, opts.waitS);
    nextId += WARMUP_EVENTS;
    await waitForRows(db, db.events, warm.ok2xx, opts.waitS, worker, 'the warm-up');
    await db.query(`TRUNCATE ${db.events}`);

    process.stderr.write(`bench: pipeline phase 1, ${opts.events} deliveries, ${opts.connections} at a time\n`);
    const throughput = await throughputPhase(ctx, nextId);
    nextId = throughput.range.to;

    process.stderr.write('bench: pipeline reference, the same rows inserted directly\n');
    const { workerPoolSize } = throughput.result;
    if (workerPoolSize < 1) throw new Error(`no connection of the worker (${workerAppName(db.schema)}) was seen`);
    const direct = await directInsertPhase(ctx, referencePoolSize(opts));
    await db.query(`TRUNCATE ${db.events}`);

    process.stderr.write(`bench: pipeline phase 2, ${opts.rate} deliveries/s for ${opts.seconds} s\n`);
    const latency = await latencyPhase(ctx, nextId);

    const result: PipelineResult = {
      options: opts,
      schema: db.schema,
      postgresVersion: version?.v ?? 'unknown',
      synchronousCommit: version?.sc ?? 'unknown',
      redisVersion,
      busyBeforePct,
      throughput: throughput.result,
      direct,
      ratio: throughput.result.pipelineRate / direct.rate,
      latency,
      ok: throughput.result.integrity.ok && latency.integrity.ok,
    };
    return { result, report: report(result) };
  } finally {
    await queue?.close();
    if (listener) await stopChild(listener.child, 5000);
    if (worker && worker !== listener) await stopChild(worker.child, 5000);
    await redis.destroy();
    // On failure the exit hook tries again.
    await db.drop().catch((err: unknown) => process.stderr.write(`bench: DROP SCHEMA ${db.schema}: ${err}\n`));
    removeTempDir(spoolDir);
  }
}
