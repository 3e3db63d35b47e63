/**
 * Property test of the HTTP surface (fast-check): arbitrary bodies, content types, signature headers, paths and
 * sizes never get a 5xx nor crash the listener, and every delivery answered 200 is a job holding the exact bytes.
 */

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { request } from 'undici';
import { rawBytesOf } from '../../src/queue/contract.ts';
import { startTestListener, untilReady } from '../helpers/listener.ts';
import { startRedis } from '../helpers/redis-server.ts';

const cleanup: (() => Promise<void>)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

const BODY_LIMIT = 4096;
const printable = fc.string({
  unit: fc.constantFrom(...' !#$%&*+-./0123456789:;=?@ABCXYZ^_`abcxyz|~"\'(),[]{}'),
  maxLength: 60,
});

const delivery = fc.record({
  body: fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    fc.string({ unit: 'binary', maxLength: 300 }).map((s) => new TextEncoder().encode(s)),
    fc.json().map((s) => new TextEncoder().encode(s)),
    fc.json().map((s) => new TextEncoder().encode(`notif=${encodeURIComponent(s)}`)),
    fc.integer({ min: BODY_LIMIT - 8, max: BODY_LIMIT * 2 }).map((n) => new Uint8Array(n).fill(0x61)),
  ),
  contentType: fc.option(
    fc.oneof(
      fc.constantFrom(
        'application/json',
        'application/x-www-form-urlencoded',
        'application/x-www-form-urlencoded; charset=UTF-8',
        'text/plain',
        'json',
        'multipart/form-data; boundary=x',
        'application/json; charset=latin1',
      ),
      printable,
    ),
    { nil: undefined },
  ),
  signature: fc.option(printable, { nil: undefined }),
  account: fc.option(fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/), { nil: undefined }),
});

test('no input gets a 5xx, and every delivery answered 200 is a job with the exact bytes and content type', async (t) => {
  const redis = await startRedis();
  cleanup.push(() => redis.destroy());
  const l = await startTestListener(redis.url, { BODY_LIMIT_BYTES: String(BODY_LIMIT), LOG_LEVEL: 'silent' });
  cleanup.push(() => l.close());
  await untilReady(l);
  const statuses = new Map<number, number>();

  await fc.assert(
    fc.asyncProperty(delivery, async ({ body, contentType, signature, account }) => {
      const headers: Record<string, string> = {};
      if (contentType !== undefined) headers['content-type'] = contentType;
      if (signature !== undefined) headers['x-webhook-signature'] = signature;
      const path = account === undefined ? '/webhook/sellsy' : `/webhook/sellsy/${account}`;
      const response = await request(`${l.url}${path}`, { method: 'POST', body, headers });
      const text = await response.body.text();
      statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1);
      assert.ok(response.statusCode < 500, `status ${response.statusCode}: ${text}`);
      if (body.length > BODY_LIMIT) {
        assert.equal(response.statusCode, 413);
        return;
      }
      // No key is configured: everything within the limit is kept, parsed or not (a wrong account is refused).
      if (response.statusCode === 401) {
        assert.match(text, /account_mismatch/);
        return;
      }
      assert.equal(response.statusCode, 200, text);
      const answer = JSON.parse(text) as { jobId: string; duplicate: boolean; spooled?: boolean };
      if (answer.spooled) await l.spooling?.drained(10_000);
      const job = await l.queue.getJob(answer.jobId);
      assert.ok(job, 'the job exists');
      // A duplicate (same account, same bytes) points at the first delivery's job: same bytes, maybe another type.
      assert.ok(rawBytesOf(job.data).equals(Buffer.from(body)), 'raw bytes kept exactly');
      // (HTTP strips the spaces around a header value: they are not part of it.)
      if (!answer.duplicate) assert.equal(job.data.contentType, contentType?.trim() ?? null);
    }),
    { numRuns: 300 },
  );
  t.diagnostic(`answers by status: ${JSON.stringify(Object.fromEntries(statuses))}`);
  assert.equal((await fetch(`${l.url}/healthz`)).status, 200);
});
