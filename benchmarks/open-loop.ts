/**
 * Open-loop (fixed-rate) load generator, in a process of its own (never in a server's event loop): what latency does
 * a server give at a steady, realistic arrival rate? The generator itself is benchmarks/lib/open-loop.ts.
 *
 *   node --import tsx benchmarks/open-loop.ts --url http://127.0.0.1:PORT --rate 2000 --duration 10 --warmup 2 \
 *        [--connections 128] [--id-base 0] [--timeout 10] [--mark-from S --mark-to S] [--list-acked]
 *        (signing key, if any: env BENCH_SIGN_KEY; --mark-*: also report the requests due in that part of the
 *        measured window, in seconds from its start, e.g. while a fault is injected; --list-acked: the relatedid of
 *        every acknowledged delivery, in `acked`)
 *
 * Prints one JSON object (OpenLoopResult) on stdout, and `@window` on stderr when the measured window starts.
 * Exits when its stdin closes (the orchestrator that started it is gone).
 */
import { parseArgs } from 'node:util';
import { openLoop } from './lib/open-loop.ts';
import { runMain } from './lib/processes.ts';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      rate: { type: 'string', default: '2000' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      connections: { type: 'string', default: '128' },
      'id-base': { type: 'string', default: '0' },
      timeout: { type: 'string', default: '10' },
      'mark-from': { type: 'string' },
      'mark-to': { type: 'string' },
      'list-acked': { type: 'boolean', default: false },
    },
  });
  if (!values.url) throw new Error('--url is required');
  const rate = Number(values.rate);
  const durationS = Number(values.duration);
  const warmupS = Number(values.warmup);
  const connections = Number(values.connections);
  const idBase = Number(values['id-base']);
  const timeoutMs = Number(values.timeout) * 1000;
  for (const [name, v] of Object.entries({ rate, durationS, warmupS, connections, idBase, timeoutMs })) {
    if (!Number.isFinite(v) || v < 0) throw new Error(`bad ${name}: ${v}`);
  }
  await openLoop({
    url: values.url,
    rate,
    durationS,
    warmupS,
    connections,
    idBase,
    timeoutMs,
    signKey: process.env.BENCH_SIGN_KEY || undefined,
    markFromMs: values['mark-from'] === undefined ? null : Number(values['mark-from']) * 1000,
    markToMs: values['mark-to'] === undefined ? null : Number(values['mark-to']) * 1000,
    listAcked: values['list-acked'] === true,
    // Tells the orchestrator to start measuring the other processes' CPU.
    onWindow: () => process.stderr.write('@window\n'),
    onResult: (result) => process.stdout.write(`${JSON.stringify(result)}\n`),
  });
}

// Exit if the orchestrator that started us goes away (it holds our stdin open).
process.stdin.on('end', () => process.exit(1));
process.stdin.on('error', () => process.exit(1));
process.stdin.resume();

runMain(main, 'open-loop: ');
