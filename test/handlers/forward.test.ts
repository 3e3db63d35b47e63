import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { PermanentError } from '../../src/errors.ts';
import { createForwardHandler, signStandardWebhook } from '../../src/handlers/forward.ts';
import type { HandlerContext } from '../../src/handlers/handler.ts';
import { createLogger } from '../../src/logger.ts';
import type { SellsyEvent } from '../../src/sellsy/payload.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { type Answer, answerWith, type Receiver, startReceiver as startTestReceiver } from '../helpers/receiver.ts';

const secret = `whsec_${randomBytes(32).toString('base64')}`;
const log = createLogger('silent');

const receivers: Receiver[] = [];
after(async () => {
  await Promise.all(receivers.map((r) => r.close()));
});

async function startReceiver(answer?: Answer): Promise<Receiver> {
  const receiver = await startTestReceiver(answer);
  receivers.push(receiver);
  return receiver;
}

const event: SellsyEvent = {
  eventType: 'docslog',
  event: 'step',
  relatedType: 'invoice',
  relatedId: '7',
  ownerType: 'staff',
  ownerId: '12',
  corpId: '929',
  timestamp: '1767225607',
  extra: {},
};

function contextFor(i: number, signal = new AbortController().signal): HandlerContext {
  const { name, data } = jobFixture(i);
  return { deliveryId: data.deliveryId, name, data, attempt: 1, attempts: 5, signal, log };
}

function forwarder(url: string, timeoutMs = 5_000) {
  return createForwardHandler({ url, secret, timeoutMs });
}

/** Asserts a rejection is retryable (not a PermanentError) and never carries the secret; returns its message. */
async function retryableRejection(promise: Promise<void>): Promise<string> {
  let caught: unknown;
  await promise.catch((err: unknown) => {
    caught = err;
  });
  assert.ok(caught instanceof Error, 'the call rejects with an Error');
  assert.ok(!(caught instanceof PermanentError), 'the error is not permanent');
  assert.ok(!caught.message.includes(secret.slice('whsec_'.length)), 'the message does not hold the secret');
  return caught.message;
}

test('the receiver gets the forward contract body as JSON', async () => {
  const receiver = await startReceiver();
  const context = contextFor(1);
  context.object = { id: 7, status: 'paid' };
  await forwarder(receiver.url)(event, context);
  assert.equal(receiver.received.length, 1);
  const { data } = jobFixture(1);
  assert.deepEqual(JSON.parse(receiver.received[0]?.body ?? ''), {
    type: 'invoice.step',
    deliveryId: data.deliveryId,
    receivedAt: data.receivedAt,
    account: '929',
    event,
    object: { id: 7, status: 'paid' },
    rawBody: data.rawBody,
    contentType: 'application/json',
    signature: 'not_configured',
  });
});

test('an unknown delivery is forwarded with null event and null object', async () => {
  const receiver = await startReceiver();
  const context = { ...contextFor(2), name: 'unknown' };
  await forwarder(receiver.url)(null, context);
  const body = JSON.parse(receiver.received[0]?.body ?? '');
  assert.equal(body.type, 'unknown');
  assert.equal(body.event, null);
  assert.equal(body.object, null);
});

test('a body that is not valid UTF-8 is forwarded with its exact bytes in rawBodyBase64', async () => {
  const receiver = await startReceiver();
  const raw = Buffer.from([0x6e, 0x6f, 0x74, 0x69, 0x66, 0x3d, 0xe9, 0xff]);
  const base = contextFor(3);
  const context = {
    ...base,
    data: { ...base.data, rawBody: raw.toString('utf8'), rawBodyBase64: raw.toString('base64') },
  };
  await forwarder(receiver.url)(null, context);
  const body = JSON.parse(receiver.received[0]?.body ?? '');
  assert.deepEqual(Buffer.from(body.rawBodyBase64, 'base64'), raw);
});

test('the request carries the content type, user agent, delivery id and current timestamp headers', async () => {
  const receiver = await startReceiver();
  const before = Math.floor(Date.now() / 1000);
  await forwarder(receiver.url)(event, contextFor(3));
  const afterSend = Math.floor(Date.now() / 1000);
  const headers = receiver.received[0]?.headers ?? {};
  assert.equal(headers['content-type'], 'application/json');
  assert.equal(headers['user-agent'], 'sellsy-webhooks');
  assert.equal(headers['webhook-id'], jobFixture(3).data.deliveryId);
  const timestamp = Number(headers['webhook-timestamp']);
  assert.ok(timestamp >= before && timestamp <= afterSend, `timestamp ${timestamp} is the send time`);
  assert.equal(headers['x-sellsy-webhooks-source'], 'webhook', 'a job without source is a webhook delivery');
});

test('a synthetic delivery of reconciliation is forwarded with the source header reconcile', async () => {
  const receiver = await startReceiver();
  const base = contextFor(6);
  await forwarder(receiver.url)(event, { ...base, data: { ...base.data, source: 'reconcile' } });
  assert.equal(receiver.received[0]?.headers['x-sellsy-webhooks-source'], 'reconcile');
});

test('the standardwebhooks library verifies the forwarded body and headers', async () => {
  const receiver = await startReceiver();
  await forwarder(receiver.url)(event, contextFor(4));
  const { headers, body } = receiver.received[0] ?? { headers: {}, body: '' };
  const verified = new Webhook(secret).verify(body, headers as Record<string, string>);
  assert.equal((verified as { deliveryId: string }).deliveryId, jobFixture(4).data.deliveryId);
});

test('two calls for the same delivery send the same webhook-id', async () => {
  const receiver = await startReceiver();
  const forward = forwarder(receiver.url);
  await forward(event, contextFor(5));
  await forward(event, { ...contextFor(5), attempt: 2 });
  assert.equal(receiver.received.length, 2);
  assert.equal(receiver.received[0]?.headers['webhook-id'], jobFixture(5).data.deliveryId);
  assert.equal(receiver.received[1]?.headers['webhook-id'], receiver.received[0]?.headers['webhook-id']);
});

test('a 500 answer rejects with a retryable error naming the status', async () => {
  const receiver = await startReceiver(answerWith(500, 'database down'));
  const message = await retryableRejection(forwarder(receiver.url)(event, contextFor(6)));
  assert.match(message, /answered 500/);
});

test('a 408 answer rejects with a retryable error', async () => {
  const receiver = await startReceiver(answerWith(408));
  const message = await retryableRejection(forwarder(receiver.url)(event, contextFor(7)));
  assert.match(message, /answered 408/);
});

test('a 429 answer rejects with a retryable error', async () => {
  const receiver = await startReceiver(answerWith(429));
  const message = await retryableRejection(forwarder(receiver.url)(event, contextFor(8)));
  assert.match(message, /answered 429/);
});

test('a 404 answer rejects with a PermanentError naming the status and the first 200 characters of the body', async () => {
  const page = `no such hook ${'x'.repeat(300)}`;
  const receiver = await startReceiver(answerWith(404, page));
  await assert.rejects(forwarder(receiver.url)(event, contextFor(9)), (err: unknown) => {
    assert.ok(err instanceof PermanentError);
    assert.match(err.message, /answered 404/);
    assert.ok(err.message.endsWith(page.slice(0, 200)), 'the message ends with the first 200 characters');
    assert.ok(!err.message.includes(page.slice(0, 201)), 'the message holds no more than 200 characters');
    return true;
  });
});

test('a redirect is not followed and rejects with a PermanentError', async () => {
  const receiver = await startReceiver((res) => {
    res.writeHead(301, { location: 'http://127.0.0.1:1/elsewhere' });
    res.end();
  });
  await assert.rejects(forwarder(receiver.url)(event, contextFor(10)), PermanentError);
  assert.equal(receiver.received.length, 1);
});

for (const status of [200, 503]) {
  test(`a ${status} answer whose body comes slowly settles at its status, without waiting for the body`, async () => {
    let finished = false;
    let timer: NodeJS.Timeout | undefined;
    const receiver = await startReceiver((res) => {
      res.writeHead(status, { 'content-type': 'text/plain' });
      let parts = 0;
      // Each part well within the timeout: only the whole body takes long.
      timer = setInterval(() => {
        res.write('.');
        if (++parts === 40) {
          clearInterval(timer);
          res.end(() => {
            finished = true;
          });
        }
      }, 100);
      res.on('close', () => clearInterval(timer));
    });
    const sent = forwarder(receiver.url, 1_000)(event, contextFor(status));
    if (status === 200) await sent;
    else await retryableRejection(sent);
    assert.equal(finished, false, 'the handler settled before the body ended');
    clearInterval(timer);
  });
}

test('a receiver that never answers makes the call reject once the timeout has passed', async () => {
  const receiver = await startReceiver(() => {});
  const started = Date.now();
  const message = await retryableRejection(forwarder(receiver.url, 200)(event, contextFor(11)));
  assert.ok(Date.now() - started >= 190, 'it waited for the timeout');
  assert.equal(message, `forward to ${receiver.url} timed out after 200 ms`);
});

test('an unreachable receiver rejects with a retryable error naming the cause', async () => {
  const receiver = await startReceiver();
  await receiver.close();
  const message = await retryableRejection(forwarder(receiver.url)(event, contextFor(12)));
  assert.match(message, /failed: ECONNREFUSED/);
});

test('a worker shutdown aborts a forward in flight with a retryable error', async () => {
  const receiver = await startReceiver(() => {});
  const controller = new AbortController();
  const pending = forwarder(receiver.url)(event, contextFor(13, controller.signal));
  setTimeout(() => controller.abort(), 50);
  const message = await retryableRejection(pending);
  assert.match(message, /shutting down/);
});

test('error messages name the target without its query string', async () => {
  const receiver = await startReceiver(answerWith(503));
  const message = await retryableRejection(forwarder(`${receiver.url}?token=s3cr3t`)(event, contextFor(14)));
  assert.ok(message.includes(receiver.url), message);
  assert.ok(!message.includes('s3cr3t'), message);
});

test('a URL holding credentials is refused when the handler is created, without quoting them', () => {
  assert.throws(
    () => forwarder('http://user:hunter2@127.0.0.1:1/hooks'),
    (err: unknown) => err instanceof Error && /credentials/.test(err.message) && !err.message.includes('hunter2'),
  );
});

test('signStandardWebhook matches the signature of the standardwebhooks library', () => {
  const id = 'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W';
  const timestamp = 1_767_225_600;
  const body = '{"type":"invoice.step","account":"929"}';
  const expected = new Webhook(secret).sign(id, new Date(timestamp * 1000), body);
  assert.equal(signStandardWebhook(secret, id, timestamp, body), expected);
});
