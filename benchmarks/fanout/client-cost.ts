/**
 * What one request to a destination costs the worker's CPU: the `forward` handler itself (src/handlers/forward.ts,
 * Node's built-in fetch, a timeout and a shutdown signal per request) next to undici's `request` on a Pool sending
 * the same headers and body, both against a sink in a process of its own (benchmarks/fanout/sinks.ts, 204).
 *
 *   node --import tsx benchmarks/fanout/client-cost.ts [--requests 20000] [--rounds 2]
 *
 * 50 requests in flight; 2,000 requests of warm-up per client and round; CPU time of this process (process.cpuUsage)
 * ÷ requests. The figure the fan-out benchmark's CPU per destination is compared with (docs/benchmarks.md).
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { Pool } from 'undici';
import { createForwardHandler, signStandardWebhook } from '../../src/handlers/forward.ts';
import type { HandlerContext } from '../../src/handlers/handler.ts';
import type { WebhookJobData } from '../../src/queue/contract.ts';
import { sellsyBody } from '../lib/bodies.ts';
import { numberOption } from '../lib/options.ts';
import { runMain } from '../lib/processes.ts';
import { f, table } from '../lib/report.ts';
import { startSinks } from './sink-process.ts';

const IN_FLIGHT = 50;
const WARMUP = 2000;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { requests: { type: 'string' }, rounds: { type: 'string' } } });
  const requests = numberOption('--requests', values.requests, undefined, 20_000, 1, true);
  const rounds = numberOption('--rounds', values.rounds, undefined, 2, 1, true);
  const sinks = await startSinks(1);
  const origin = `http://127.0.0.1:${sinks.ports[0]}`;
  const secret = `whsec_${randomBytes(32).toString('base64')}`;
  const log = pino({ level: 'silent' });
  const shutdown = new AbortController();
  const context = (i: number): HandlerContext => {
    const rawBody = sellsyBody(i);
    const data = {
      v: 1,
      deliveryId: `delivery-${i}`,
      receivedAt: new Date().toISOString(),
      contentType: 'application/json',
      rawBody,
      account: '929',
      signature: { status: 'unchecked', header: null, scope: 'body' },
      event: null,
      parseProblem: null,
      dedupKey: String(i),
    } as WebhookJobData;
    return {
      deliveryId: data.deliveryId,
      name: 'invoice.step',
      data,
      attempt: 1,
      attempts: 5,
      signal: shutdown.signal,
      log,
    };
  };
  const forward = createForwardHandler({ url: `${origin}/hook`, secret, timeoutMs: 10_000 });
  const pool = new Pool(origin, { connections: IN_FLIGHT });
  const clients: Record<string, (i: number) => Promise<void>> = {
    'forward handler (fetch)': (i) => forward(null, context(i)),
    'undici request, Pool': async (i) => {
      const ctx = context(i);
      const { data } = ctx;
      // The handler's body, so that both clients send the same bytes.
      const body = JSON.stringify({
        type: ctx.name,
        deliveryId: ctx.deliveryId,
        receivedAt: data.receivedAt,
        account: data.account,
        event: null,
        object: null,
        rawBody: data.rawBody,
        contentType: data.contentType,
        signature: data.signature.status,
      });
      const timestamp = Math.floor(Date.now() / 1000);
      const res = await pool.request({
        path: '/hook',
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'sellsy-webhooks',
          'webhook-id': ctx.deliveryId,
          'webhook-timestamp': String(timestamp),
          'webhook-signature': signStandardWebhook(secret, ctx.deliveryId, timestamp, body),
          'x-sellsy-webhooks-source': 'webhook',
        },
        body,
        signal: ctx.signal,
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      });
      await res.body.dump();
      if (res.statusCode !== 204) throw new Error(`the sink answered ${res.statusCode}`);
    },
  };
  const rows: string[][] = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const [name, send] of Object.entries(clients)) {
        const run = async (n: number) => {
          let next = 0;
          await Promise.all(
            Array.from({ length: IN_FLIGHT }, async () => {
              while (next < n) await send(next++);
            }),
          );
        };
        await run(WARMUP);
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        await run(requests);
        const cpu = process.cpuUsage(cpu0);
        const seconds = (performance.now() - t0) / 1000;
        rows.push([String(round), name, f((cpu.user + cpu.system) / requests, 0), f(requests / seconds, 0)]);
      }
    }
  } finally {
    await pool.close();
    await sinks.stop();
  }
  process.stdout.write(
    `${requests} POSTs per client and round, ${IN_FLIGHT} in flight, to a sink in another process\n` +
      `${table(['round', 'client', 'µs CPU/request', 'requests/s'], rows)}\n`,
  );
}

runMain(main);
