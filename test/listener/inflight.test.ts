/**
 * INFLIGHT_BYTES_LIMIT: back-pressure on body reading, never a refusal.
 */

import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config.ts';
import { ConfigError } from '../../src/errors.ts';
import { ByteGate } from '../../src/listener/inflight.ts';
import { post, useTestListeners } from '../helpers/listener.ts';

const { listener } = useTestListeners();

test('the byte gate lets requests in while their bytes fit, then in arrival order as bytes are given back', async () => {
  const gate = new ByteGate(100);
  const order: string[] = [];
  const a = await gate.acquire(60);
  const b = await gate.acquire(40);
  const c = gate.acquire(30).then((release) => {
    order.push('c');
    return release;
  });
  const d = gate.acquire(10).then((release) => {
    order.push('d');
    return release;
  });
  await Promise.resolve();
  assert.equal(gate.waiting, 2, 'the 30 and 10 byte requests wait: 100 bytes are taken');
  a();
  a();
  const releases = await Promise.all([c, d]);
  assert.deepEqual(order, ['c', 'd'], 'a later, smaller request does not overtake an earlier one');
  assert.equal(gate.inFlight, 80);
  b();
  for (const release of releases) release();
  assert.equal(gate.inFlight, 0);
  assert.equal(gate.peak, 100);
});

test('a body larger than the limit is let in alone, not refused', async () => {
  const gate = new ByteGate(100);
  const small = await gate.acquire(10);
  const big = gate.acquire(500);
  await Promise.resolve();
  assert.equal(gate.waiting, 1);
  small();
  (await big)();
  assert.equal(gate.peak, 500);
});

test('INFLIGHT_BYTES_LIMIT must be a whole number of bytes of at least 1024', () => {
  for (const value of ['abc', '-1', '100', '1.5']) {
    assert.throws(
      () => loadConfig({ INFLIGHT_BYTES_LIMIT: value }),
      (err: unknown) => err instanceof ConfigError && /INFLIGHT_BYTES_LIMIT/.test(err.message),
      value,
    );
  }
  assert.equal(loadConfig({}).inflightBytesLimit, null);
  assert.equal(loadConfig({ INFLIGHT_BYTES_LIMIT: '65536' }).inflightBytesLimit, 65536);
});

test('with INFLIGHT_BYTES_LIMIT, 20 concurrent 100 kB deliveries over a 200 kB limit are all answered 200 and queued', async () => {
  const l = await listener({ INFLIGHT_BYTES_LIMIT: String(200 * 1024) });
  const bodies = Array.from({ length: 20 }, (_, i) =>
    Buffer.from(
      JSON.stringify({ relatedtype: 'invoice', event: 'step', relatedid: String(i), pad: 'x'.repeat(100_000) }),
    ),
  );
  const answers = await Promise.all(bodies.map((b) => post(l.url, b, { 'content-type': 'application/json' })));
  assert.deepEqual(
    answers.map((a) => a.status),
    bodies.map(() => 200),
  );
  const ids = answers.map((a) => a.body.jobId as string);
  for (const id of ids) assert.ok(await l.queue.getJob(id), `job ${id}`);
});

/** Sends `head` on a raw connection; resolves the answer's status line once the whole answer came. */
function rawRequest(url: string, head: string): { socket: ReturnType<typeof connect>; answer: Promise<string> } {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.write(head);
  const answer = new Promise<string>((resolve, reject) => {
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      if (/\r\n\r\n[\s\S]*\}/.test(text)) {
        resolve(text.split('\r\n', 1)[0] ?? '');
        socket.end();
      }
    });
    socket.on('error', reject);
  });
  return { socket, answer };
}

test('regression: past INFLIGHT_BYTES_LIMIT the next body is read only after the bodies before it were answered', async () => {
  const l = await listener({ INFLIGHT_BYTES_LIMIT: '4096' });
  const body = JSON.stringify({ relatedtype: 'invoice', event: 'step', relatedid: '1', pad: 'x'.repeat(3000) });
  const head = (n: number) =>
    `POST /webhook/sellsy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${n}\r\nConnection: close\r\n\r\n`;
  const answered: string[] = [];
  // The first request takes 3 kB of the 4 kB and sends only half its body for now.
  const first = rawRequest(l.url, head(Buffer.byteLength(body)) + body.slice(0, 1500));
  await new Promise((resolve) => setTimeout(resolve, 100));
  // The second one (3 kB more) must wait for the first to be answered.
  const secondBody = body.replace('"1"', '"2"');
  const second = rawRequest(l.url, head(Buffer.byteLength(secondBody)) + secondBody);
  const secondDone = second.answer.then((status) => answered.push(`second ${status}`));
  await new Promise((resolve) => setTimeout(resolve, 300));
  first.socket.write(body.slice(1500));
  const firstDone = first.answer.then((status) => answered.push(`first ${status}`));
  await Promise.all([firstDone, secondDone]);
  assert.deepEqual(answered, ['first HTTP/1.1 200 OK', 'second HTTP/1.1 200 OK']);
});
