/**
 * The fan-out benchmark's destinations: `count` HTTP servers on 127.0.0.1 in one process of their own (so that their
 * CPU is never counted as the worker's), each answering 204 to every request and recording, per request, when it
 * arrived, its `webhook-id` and the `receivedAt` and Sellsy `relatedid` of the forwarded body. Signatures are not
 * verified: the benchmark measures the worker, and the tests check the signatures.
 *
 *   node --import tsx benchmarks/fanout/sinks.ts <count>
 *
 * Protocol, one line each way: it prints `{"ports":[…]}` once listening; then, for each line read on stdin, `counts`
 * → `{"counts":[requests per sink]}`, `dump` → `{"sinks":[[[arrivalMs, receivedAtMs, relatedid, webhookId], …], …]}`.
 * Exits when its stdin closes (the orchestrator that started it is gone).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import type { Arrival } from './results.ts';

// Regular expressions rather than JSON.parse: the sinks share the machine's two cores with the service under test.
const RECEIVED_AT = /"receivedAt":"([^"]+)"/;
// Inside rawBody, a JSON string: its quotes are escaped.
const RELATED_ID = /relatedid\\":\\"(\d+)/;

function sink(records: Arrival[]): Server {
  const server = createServer((req, res) => {
    const arrival = performance.timeOrigin + performance.now();
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const receivedAt = Date.parse(RECEIVED_AT.exec(body)?.[1] ?? '');
      const relatedId = Number(RELATED_ID.exec(body)?.[1] ?? Number.NaN);
      records.push([arrival, receivedAt, relatedId, String(req.headers['webhook-id'] ?? '')]);
      res.writeHead(204).end();
    });
  });
  // Longer than the worker's idle connections live: a closed keep-alive socket would cost a reconnect mid-run.
  server.keepAliveTimeout = 60_000;
  return server;
}

async function main(): Promise<void> {
  const count = Number(process.argv[2]);
  if (!Number.isInteger(count) || count < 1) throw new Error(`usage: sinks.ts <count ≥ 1> (got ${process.argv[2]})`);
  const records: Arrival[][] = Array.from({ length: count }, () => []);
  const servers = records.map(sink);
  const ports = await Promise.all(
    servers.map(
      (server) =>
        new Promise<number>((resolve, reject) => {
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
        }),
    ),
  );
  process.stdout.write(`${JSON.stringify({ ports })}\n`);
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line === 'counts') process.stdout.write(`${JSON.stringify({ counts: records.map((r) => r.length) })}\n`);
    else if (line === 'dump') process.stdout.write(`${JSON.stringify({ sinks: records })}\n`);
  });
  // The orchestrator holds our stdin open: its end means it is gone.
  lines.on('close', () => process.exit(0));
}

main().catch((err: unknown) => {
  process.stderr.write(`sinks: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
