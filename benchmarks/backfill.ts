/**
 * `npm run bench:backfill`: a backfill (src/cli/backfill.ts, as `sellsy-webhooks backfill` runs it) of BENCH_OBJECTS
 * fake Sellsy objects (default 10,000: half companies, changed in the last 12 hours, found by `updated_at`; half
 * invoices, created in the last 22 hours, found by a rescan of the look-back window: a backfill queues those
 * created in its window and records the fingerprints of older ones) against a small fake Sellsy search
 * server of its own (benchmarks/lib/sellsy-search.ts) and a private Redis. Then the same window again: nothing new.
 * Printed per run: duration, API calls (searches answered), jobs queued (counted in the queue), and the command's
 * summary line.
 */
import { Queue } from 'bullmq';
import { backfill, parseBackfillArgs } from '../src/cli/backfill.ts';
import type { CliIo } from '../src/cli/io.ts';
import { loadConfig } from '../src/config/config.ts';
import { machineInfo } from './lib/machine.ts';
import { startPrivateRedis } from './lib/redis.ts';
import { type FakeObject, startSearchServer } from './lib/sellsy-search.ts';

const total = Number(process.env.BENCH_OBJECTS ?? 10_000);
if (!Number.isInteger(total) || total < 2) throw new Error('BENCH_OBJECTS must be an integer of at least 2');

const now = Date.now();
const companies: FakeObject[] = [];
const invoices: FakeObject[] = [];
for (let i = 1; i <= Math.floor(total / 2); i++) {
  companies.push({
    id: i,
    name: `Company ${i}`,
    type: 'client',
    updated_at: new Date(now - 60_000 - i * 5_000).toISOString(),
  });
}
for (let i = 1; i <= total - companies.length; i++) {
  invoices.push({
    id: i,
    number: `F-${i}`,
    status: i % 3 === 0 ? 'paid' : 'due',
    created: new Date(now - 3_600_000 - i * 15_000).toISOString(),
    amounts: { total_excl_tax: `${i}.00`, total_incl_tax: `${(i * 1.2).toFixed(2)}` },
    related: [{ id: i, type: 'company' }],
  });
}
// Filters compare dates; pages go by id.
const api = await startSearchServer(
  new Map([
    ['companies', companies],
    ['invoices', invoices],
  ]),
);
const redis = await startPrivateRedis();
const queueName = 'bench-backfill';
const config = loadConfig({
  REDIS_URL: redis.url,
  QUEUE_NAME: queueName,
  SELLSY_CLIENT_ID: api.clientId,
  SELLSY_CLIENT_SECRET: api.clientSecret,
  SELLSY_API_URL: api.apiUrl,
  SELLSY_TOKEN_URL: api.tokenUrl,
  SELLSY_ACCOUNT_ID: '929',
  RECORD_ORDER: 'off',
});
const queue = new Queue(queueName, { connection: { url: redis.url } });
const env = machineInfo();
console.log(
  `machine: ${env.cpuModel}, ${env.nproc} cores, node ${env.node}, commit ${env.commit}${env.srcDirty ? ' (src modified)' : ''}, ${env.date}`,
);
console.log(
  `backfill of ${companies.length} companies + ${invoices.length} invoices, --since 24h --types companies,invoices`,
);

async function run(label: string): Promise<void> {
  const args = parseBackfillArgs(['--since', '24h', '--types', 'companies,invoices']);
  if (typeof args === 'string') throw new Error(args);
  const lines: string[] = [];
  const io: CliIo = { out: (l) => lines.push(l), err: (l) => lines.push(l), isTTY: false, serve: () => undefined };
  const searchesBefore = api.searches;
  const jobsBefore = await queue.count();
  const started = performance.now();
  const code = await backfill(config, args, io);
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`backfill exited ${code}:\n${lines.join('\n')}`);
  const jobs = (await queue.count()) - jobsBefore;
  console.log(
    `${label}: ${seconds.toFixed(2)} s, API calls ${api.searches - searchesBefore}, jobs queued ${jobs}` +
      ` (${jobs > 0 ? Math.round(jobs / seconds) : 0} jobs/s)`,
  );
  for (const l of lines.slice(1)) console.log(`  ${l}`);
}

try {
  await run('first run');
  await run('rerun (same window)');
} finally {
  await queue.close();
  await api.close();
  await redis.destroy();
}
