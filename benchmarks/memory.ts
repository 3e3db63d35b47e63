/**
 * The memory benchmark: how much memory does the listener take per byte of body in flight, and does it give it back?
 *
 *   npm run bench:memory [-- --concurrency 100 --bursts 3 --size 1040000 --idle 10 --skip-build]
 *
 * Starts a private redis-server (AOF everysec) and the real listener (`node dist/src/cli.js listen`, default settings
 * but for a signing key, the port and a temporary spool directory; INFLIGHT_BYTES_LIMIT etc. from this process's
 * environment when set), then sends `bursts` bursts of `concurrency` concurrent Sellsy-shaped deliveries of about
 * `size` bytes each (just under BODY_LIMIT_BYTES' default 1 MiB): half `application/x-www-form-urlencoded` with a
 * `notif=` field, half JSON, each with a large `relatedobject` (an invoice with many rows), every body unique and
 * signed. Redis is healthy; many deliveries are spooled all the same, as Redis cannot confirm 1 MB within the 10 ms
 * ack budget.
 *
 * The listener's RSS is read from /proc/<pid>/status (VmRSS sampled every 10 ms, VmHWM: the kernel's peak) before the
 * load, at its peak, and after `idle` seconds without requests once every delivery is a job. Printed: those figures,
 * the bytes in flight (concurrency × body size), peak RSS over bytes in flight, and the check that every 200 answer
 * is a job in Redis (spool drained).
 */

import { parseArgs } from 'node:util';
import { largeBody, largeBodyTemplates, sellsySignature, WEBHOOK_PATH } from './lib/bodies.ts';
import { machineInfo, memoryKb } from './lib/machine.ts';
import { numberOption } from './lib/options.ts';
import { baseEnv, ensureBuilt, makeTempDir, runMain, sleep, stopChild, waitForHttp200 } from './lib/processes.ts';
import { startPrivateRedis } from './lib/redis.ts';
import { freePort } from './lib/redis-server.ts';
import { f, table } from './lib/report.ts';
import { startService } from './lib/service.ts';
import { waitFor } from './lib/wait.ts';

const SIGN_KEY = 'bench-memory-sign-key';
const QUEUE = 'bench-memory';
const MB = 1024 * 1024;

interface Options {
  concurrency: number;
  bursts: number;
  size: number;
  idleS: number;
  build: boolean;
}

function readOptions(): Options {
  const { values } = parseArgs({
    options: {
      concurrency: { type: 'string' },
      bursts: { type: 'string' },
      size: { type: 'string' },
      idle: { type: 'string' },
      'skip-build': { type: 'boolean' },
    },
  });
  const num = (name: string, raw: string | undefined, def: number, min: number) =>
    numberOption(`--${name}`, raw, undefined, def, min, true);
  return {
    concurrency: num('concurrency', values.concurrency, 100, 1),
    bursts: num('bursts', values.bursts, 3, 1),
    // Under the default BODY_LIMIT_BYTES (1 MiB) with room for the per-request id digits.
    size: num('size', values.size, 1_040_000, 1024),
    idleS: num('idle', values.idle, 10, 0),
    build: !(values['skip-build'] || process.env.BENCH_SKIP_BUILD === '1'),
  };
}

const mb = (kb: number) => kb / 1024;

// ---------------------------------------------------------------------------------------------------------------

interface Answer {
  status: number;
  jobId?: string;
  spooled?: boolean;
  queued?: boolean;
}

async function post(url: string, body: string, contentType: string): Promise<Answer> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': contentType, 'x-webhook-signature': sellsySignature(SIGN_KEY, body) },
    body,
  });
  const text = await res.text();
  try {
    return { status: res.status, ...(JSON.parse(text) as Omit<Answer, 'status'>) };
  } catch {
    return { status: res.status };
  }
}

async function main(): Promise<void> {
  const opts = readOptions();
  const env = machineInfo();
  ensureBuilt(opts.build);

  const t = largeBodyTemplates(opts.size);
  const sample = [largeBody(t, 0), largeBody(t, 1)];
  const bodyBytes = Math.round(sample.reduce((sum, b) => sum + Buffer.byteLength(b.body), 0) / sample.length);
  const inflightMb = (bodyBytes * opts.concurrency) / MB;

  const redis = await startPrivateRedis();
  const spoolDir = makeTempDir('sellsy-webhooks-bench-spool-');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const passThrough: NodeJS.ProcessEnv = {};
  for (const name of ['INFLIGHT_BYTES_LIMIT', 'MALLOC_ARENA_MAX', 'NODE_OPTIONS', 'ACK_BUDGET_MS'])
    if (process.env[name] !== undefined) passThrough[name] = process.env[name];
  const service = startService('listen', {
    ...baseEnv(),
    ...passThrough,
    PORT: String(port),
    HOST: '127.0.0.1',
    REDIS_URL: redis.url,
    QUEUE_NAME: QUEUE,
    SPOOL_DIR: spoolDir,
    SELLSY_SIGN_KEY: SIGN_KEY,
    LOG_LEVEL: 'warn',
  });
  const listener = service.child;
  const listenerErr = () => service.output();
  const pid = listener.pid as number;
  let peakSampledKb = 0;
  const sampler = setInterval(() => {
    const rss = memoryKb(pid, 'VmRSS');
    if (rss > peakSampledKb) peakSampledKb = rss;
  }, 10);
  try {
    await waitForHttp200(`${url}/readyz`, listener, 20_000, () => `listener stderr:\n${listenerErr()}`);
    await sleep(500);
    const startKb = memoryKb(pid, 'VmRSS');
    process.stderr.write(
      `bench: ${opts.bursts} burst(s) of ${opts.concurrency} concurrent deliveries of ${bodyBytes} bytes\n`,
    );

    const answers: Answer[] = [];
    const burstPeaks: number[] = [];
    let n = 0;
    const started = performance.now();
    for (let burst = 0; burst < opts.bursts; burst++) {
      const bodies = Array.from({ length: opts.concurrency }, () => largeBody(t, n++));
      answers.push(...(await Promise.all(bodies.map((b) => post(`${url}${WEBHOOK_PATH}`, b.body, b.contentType)))));
      burstPeaks.push(memoryKb(pid, 'VmHWM'));
    }
    const loadS = (performance.now() - started) / 1000;

    // Every 200 must become a job: wait for the spool to drain into Redis.
    const ok = answers.filter((a) => a.status === 200 && a.queued !== false && typeof a.jobId === 'string');
    const ids = ok.map((a) => a.jobId as string);
    let missing = ids.length;
    const allQueued = async () => {
      const pipeline = redis.client.pipeline();
      for (const id of ids) pipeline.exists(`bull:${QUEUE}:${id}`);
      const results = (await pipeline.exec()) ?? [];
      missing = results.filter(([err, v]) => err !== null || v !== 1).length;
      return missing === 0;
    };
    // Past the timeout the round is reported with the jobs still missing.
    await waitFor(allQueued, 120_000, 'every acknowledged delivery to be a job', 200).catch(() => undefined);
    const drainedKb = memoryKb(pid, 'VmRSS');
    await sleep(opts.idleS * 1000);
    const idleKb = memoryKb(pid, 'VmRSS');
    const hwmKb = memoryKb(pid, 'VmHWM');
    const peakKb = Math.max(hwmKb, peakSampledKb);
    const jobs = await redis.client.eval(
      `return #redis.call('keys', ARGV[1])`,
      0,
      `bull:${QUEUE}:????????-????-????-????-????????????`,
    );

    const spooled = ok.filter((a) => a.spooled).length;
    const other = answers.length - ok.length;
    process.stdout.write(
      `\nmemory benchmark — Node ${env.node}, ${env.nproc} vCPU (${env.cpuModel}), commit ${env.commit}${env.srcDirty ? ' (src modified)' : ''}, ${env.date}\n` +
        `listener env: ${
          Object.entries(passThrough)
            .map(([k, v]) => `${k}=${v}`)
            .join(' ') || 'defaults'
        }\n\n`,
    );
    process.stdout.write(
      `${table(
        ['figure', 'value'],
        [
          ['deliveries sent', String(answers.length)],
          ['body size (bytes, mean of form and JSON)', String(bodyBytes)],
          ['bytes in flight (MB, concurrency × body)', f(inflightMb, 1)],
          ['load time (s)', f(loadS, 1)],
          ['answered 200 (acknowledged)', String(ok.length)],
          ['  of which spooled', String(spooled)],
          ['other answers (not 200 or queued:false)', String(other)],
          ['acknowledged without a job in Redis', String(missing)],
          ['job keys in Redis', String(jobs)],
          ['RSS before the load (MB)', f(mb(startKb), 0)],
          ['peak RSS (MB, VmHWM)', f(mb(peakKb), 0)],
          ['peak RSS after each burst (MB)', burstPeaks.map((k) => f(mb(k), 0)).join(' / ')],
          ['peak RSS / bytes in flight', f(mb(peakKb) / inflightMb, 1)],
          ['(peak − before) / bytes in flight', f((mb(peakKb) - mb(startKb)) / inflightMb, 1)],
          ['RSS once drained (MB)', f(mb(drainedKb), 0)],
          [`RSS after ${opts.idleS} s idle (MB)`, f(mb(idleKb), 0)],
        ],
      )}\n`,
    );
    if (other > 0 || missing > 0) {
      process.stdout.write(`\nlistener stderr (last lines):\n${listenerErr()}\n`);
      process.exitCode = 1;
    }
  } finally {
    clearInterval(sampler);
    await stopChild(listener, 10_000);
    await redis.destroy();
  }
}

runMain(main, 'bench: ');
