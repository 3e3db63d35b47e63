/**
 * The spool's entry format: a delivery's entry is about the size of its body, drains back to the very job that was
 * spooled whatever the body, and entries of the earlier format (`SWR1`, the job as JSON) are still read.
 */

import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  bindRawBody,
  dedupKeyOf,
  deriveBodyFieldsLazily,
  rawBodyFields,
  type WebhookJob,
} from '../../src/queue/contract.ts';
import { jobNameOf, parseDelivery } from '../../src/sellsy/payload.ts';
import { ENTRY_HEADER_BYTES, encodeEntry, FILE_HEADER, scanEntries } from '../../src/spool/format.ts';
import { Spool } from '../../src/spool/spool.ts';
import { jobFixture } from '../helpers/jobs.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';

const tempDir = useTempDirs('spool-format-test-');

/** A job built from `raw` the way the listener builds it (src/listener/webhook.ts). */
function listenerJob(i: number, raw: Buffer, contentType: string | null): WebhookJob {
  const parsed = parseDelivery(raw, contentType ?? undefined);
  const job: WebhookJob = {
    name: jobNameOf(parsed.event),
    data: {
      v: 1,
      deliveryId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      receivedAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
      contentType,
      ...rawBodyFields(raw),
      account: '929',
      signature: { status: 'verified', header: 'abc', scope: 'body' },
      event: parsed.event,
      parseProblem: parsed.problem,
      dedupKey: dedupKeyOf('929', raw),
      request: { id: `req-${i}`, path: '/webhook/sellsy', ip: '127.0.0.1', userAgent: 'Sellsy' },
    },
  };
  bindRawBody(job.data, raw);
  return job;
}

/** An invoice event with a `relatedobject` of `rows` rows, non-ASCII text included. */
function invoiceJson(rows: number): string {
  return JSON.stringify({
    eventType: 'docslog',
    event: 'step',
    relatedtype: 'invoice',
    relatedid: '4521',
    ownertype: 'staff',
    ownerid: '1084',
    corpid: '929',
    timestamp: '1767225600',
    relatedobject: {
      id: 4521,
      thirdname: 'Société «Dupont & Fils»',
      rows: Array.from({ length: rows }, (_, n) => ({ id: n, name: `Article ${n} — révision`, qt: '2.000' })),
    },
  });
}

const bodies: [string, Buffer, string | null][] = [
  ['a JSON event', Buffer.from(invoiceJson(20)), 'application/json'],
  [
    'a form event (notif=)',
    Buffer.from(`notif=${encodeURIComponent(invoiceJson(20))}&extra=1`),
    'application/x-www-form-urlencoded',
  ],
  ['an unknown body (text/plain)', Buffer.from('hello'), 'text/plain'],
  ['a body without a Content-Type', Buffer.from('{"event":"x"}'), null],
  ['invalid JSON', Buffer.from('{"event":'), 'application/json'],
  ['a body that is not UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x22, 0x7d, 0x00]), 'application/json'],
  ['an empty body', Buffer.alloc(0), 'application/x-www-form-urlencoded'],
];

for (const [what, raw, contentType] of bodies) {
  test(`a spooled delivery with ${what} drains as the job the listener built`, async () => {
    const dir = tempDir();
    const { spool } = await Spool.open({ dir, maxBytes: 1 << 24 });
    const job = listenerJob(1, raw, contentType);
    await spool.append(job);
    const seen: WebhookJob[] = [];
    await spool.drain(async (jobs) => {
      seen.push(...jobs);
    });
    await spool.close();
    assert.deepStrictEqual(seen, [JSON.parse(JSON.stringify(job))]);
  });
}

test('the spool entry of a 1 MB delivery is about the size of its body, not twice it', () => {
  const raw = Buffer.from(invoiceJson(20_000));
  assert.ok(raw.length > 1_000_000);
  const entry = encodeEntry(listenerJob(1, raw, 'application/json'));
  // The job's other fields (ids, dates, the signature header, the request) take well under a kilobyte.
  assert.ok(entry.length - raw.length < 1024, `entry ${entry.length} bytes for a body of ${raw.length}`);
  const { entries } = scanEntries(Buffer.concat([FILE_HEADER, entry]));
  assert.equal(entries[0]?.job.data.rawBody, raw.toString('utf8'));
});

test('entries of the earlier format (the job as JSON) are still drained, beside the new ones', async () => {
  const dir = tempDir();
  // A segment as an earlier version left it: `SWR1` entries only.
  const old = [jobFixture(0), jobFixture(1)];
  const oldRecords = old.map(encodeEntry);
  assert.equal(oldRecords[0]?.readUInt32LE(0), 0x31525753);
  await writeFile(join(dir, 'segment-0000000000000001.log'), Buffer.concat([FILE_HEADER, ...oldRecords]));
  const { spool, recovery } = await Spool.open({ dir, maxBytes: 1 << 24 });
  assert.equal(recovery.depth, 2);
  const fresh = listenerJob(2, Buffer.from(invoiceJson(3)), 'application/json');
  await spool.append(fresh);
  const segments = (await readdir(dir)).filter((f) => f.endsWith('.log')).sort();
  const newest = await readFile(join(dir, segments.at(-1) as string));
  assert.equal(newest.readUInt32LE(FILE_HEADER.length), 0x32525753, 'new entries are written in the new format');
  assert.ok(newest.length > FILE_HEADER.length + ENTRY_HEADER_BYTES);
  const seen: WebhookJob[] = [];
  await spool.drain(async (jobs) => {
    seen.push(...jobs);
  });
  await spool.close();
  assert.deepStrictEqual(
    seen,
    [...old, fresh].map((j) => JSON.parse(JSON.stringify(j))),
  );
});

test('a large delivery is spooled without its body being decoded into a string or its event rebuilt, and drains as the same job', async () => {
  const raw = Buffer.from(invoiceJson(5_000));
  const eager = listenerJob(1, raw, 'application/json');
  // The listener's large-body job: the same fields, those derived from the body computed only when read.
  const lazy: WebhookJob = { name: eager.name, data: { ...eager.data } };
  let reads = 0;
  deriveBodyFieldsLazily(lazy.data, raw, () => {
    reads++;
    return parseDelivery(raw, 'application/json').event;
  });
  const rawBodyRead = Object.getOwnPropertyDescriptor(lazy.data, 'rawBody')?.get;
  assert.ok(rawBodyRead, 'rawBody is derived when read');
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 24 });
  await spool.append(lazy);
  assert.equal(reads, 0, 'the spool entry was written without the parsed event');
  const seen: WebhookJob[] = [];
  await spool.drain(async (jobs) => {
    seen.push(...jobs);
  });
  await spool.close();
  assert.deepStrictEqual(seen, [JSON.parse(JSON.stringify(eager))]);
  // Read on the way to Redis (JSON.stringify), they are the values the eager job holds, in the same key order.
  assert.equal(JSON.stringify(lazy), JSON.stringify(eager));
});

test('a scanned segment holds its entries as bytes: each read of an entry decodes it again, so a drain holds decoded only the batch it sends', () => {
  const jobs = [1, 2, 3].map((i) => listenerJob(i, Buffer.from(invoiceJson(50)), 'application/json'));
  const { entries } = scanEntries(Buffer.concat([FILE_HEADER, ...jobs.map(encodeEntry)]));
  assert.deepStrictEqual(
    entries.map((e) => e.receivedAt),
    jobs.map((j) => j.data.receivedAt),
  );
  const first = entries[0];
  assert.notEqual(first?.job, first?.job, 'not kept decoded by the scan');
  assert.deepStrictEqual(first?.job, JSON.parse(JSON.stringify(jobs[0])));
});

test('the drain sends deliveries of about 1 MB one or two at a time (batches of at most 2 MiB)', async () => {
  const dir = tempDir();
  const { spool } = await Spool.open({ dir, maxBytes: 1 << 26 });
  const raw = Buffer.from(invoiceJson(16_000));
  assert.ok(raw.length > 900_000 && raw.length < 1_048_576, `${raw.length} bytes`);
  for (let i = 0; i < 5; i++) await spool.append(listenerJob(i, raw, 'application/json'));
  const batches: number[] = [];
  await spool.drain(async (jobs, bytes) => {
    assert.ok(bytes <= 2 * 1024 * 1024);
    batches.push(jobs.length);
  });
  await spool.close();
  assert.deepStrictEqual(batches, [2, 2, 1]);
});
