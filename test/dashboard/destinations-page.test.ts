/**
 * The dashboard's destinations page (/admin/destinations and its JSON) through the real path: a listener and a worker
 * sharing a private redis-server and one DESTINATIONS_FILE, `forward` sending to HTTP receivers on loopback. An open
 * breaker and the dead letters of a destination's retry job and of a catch-up job show up as `stats` reads them, and
 * as many as `replay --destination` would send (each delivery once; none once a catch-up delivered it; an old fan-out
 * dead letter naming every destination still failing); the page follows DESTINATIONS_FILE as it is now; it needs the
 * dashboard's login and never shows a URL's query string.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { chromium } from 'playwright-core';
import { replay } from '../../src/cli/replay.ts';
import type { ReplayFilter } from '../../src/cli/replay-filter.ts';
import { collectStats } from '../../src/cli/stats.ts';
import { loadConfig } from '../../src/config/config.ts';
import { escapeHtml } from '../../src/dashboard/destinations-page.ts';
import { RedisDestinationBreaker } from '../../src/queue/destination-breaker.ts';
import { RedisDestinationLedger } from '../../src/queue/destination-ledger.ts';
import type { DestinationStatus } from '../../src/queue/destination-status.ts';
import { shownUrl } from '../../src/redact.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { usePrivateRedis } from '../helpers/private-redis.ts';
import { answerWith, type Receiver, startReceiver } from '../helpers/receiver.ts';
import { startRedis } from '../helpers/redis-server.ts';
import { useTempDirs } from '../helpers/temp-dirs.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, startTestWorker } from '../helpers/worker.ts';

const USER = 'admin';
const PASSWORD = 'correct horse battery staple';
const LOGIN = { ADMIN_USER: USER, ADMIN_PASSWORD: PASSWORD };
const AUTH = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
const QUERY_TOKEN = 'tok-in-the-query-0123456789';
const secrets = {
  ACCOUNTING_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
  CRM_SECRET: `whsec_${randomBytes(32).toString('base64')}`,
};
const tempDir = useTempDirs('sellsy-dashboard-destinations-');

const { redis, cleanup } = usePrivateRedis();

async function receiver(status: number): Promise<Receiver> {
  const r = await startReceiver(answerWith(status));
  cleanup.push(() => r.close());
  return r;
}

/** accounting: every event, at a path with characters HTML must escape and a token in its query string;
 * crm: invoices only, its breaker open after one failure and not probing again during the test. */
function destinationsFile(accounting: Receiver, crm: Receiver): { path: string; accountingUrl: string } {
  const accountingUrl = `${accounting.url}/a&b'c?token=${QUERY_TOKEN}`;
  const path = join(tempDir(), 'destinations.yaml');
  writeFileSync(
    path,
    [
      'destinations:',
      '  - name: accounting',
      `    url: ${JSON.stringify(accountingUrl)}`,
      `    secret: \${ACCOUNTING_SECRET}`,
      '  - name: crm',
      `    url: ${crm.url}`,
      `    secret: \${CRM_SECRET}`,
      '    events: ["invoice.*"]',
      '    breaker_failures: 1',
      '    breaker_probe_seconds: 3600',
      // Its retry job spends its attempt while the breaker is open, rather than wait an hour for the probe.
      '    breaker_max_pause_seconds: 0',
      '',
    ].join('\n'),
  );
  return { path, accountingUrl };
}

async function listenerWith(env: Record<string, string>): Promise<TestListener> {
  const listener = await startTestListener(redis.url, env);
  cleanup.push(() => listener.close());
  await untilReady(listener);
  return listener;
}

function get(listener: TestListener, path: string, authorization?: string) {
  return fetch(`${listener.url}${path}`, { headers: authorization ? { authorization } : {} });
}

async function failed(listener: TestListener, jobId: string): Promise<string> {
  await waitFor(async () => (await listener.queue.getJobState(jobId)) === 'failed', 20_000, `job ${jobId} failed`);
  return (await listener.queue.getJob(jobId))?.failedReason ?? '';
}

interface Shown extends DestinationStatus {
  url: string;
  events: string[];
  replay: string;
}

test("an open breaker, crm's retry job failed for good and accounting's catch-up job refused show on the page and in its JSON, as stats reads them", async () => {
  const accounting = await receiver(200);
  const crm = await receiver(503);
  const file = destinationsFile(accounting, crm);
  const env = { ...secrets, DESTINATIONS_FILE: file.path, JOB_ATTEMPTS: '1', JOB_BACKOFF_MS: '100' };
  const listener = await listenerWith({ ...LOGIN, ...env });
  const worker = await startTestWorker(listener, env);
  cleanup.push(() => worker.close());

  // A fan-out job: accounting takes it, crm fails (503) and its breaker opens; crm's retry job has one attempt,
  // spent at once (the breaker is open), so a dead letter of crm's.
  const body = JSON.stringify({ event: 'step', relatedtype: 'invoice', relatedid: '42', corpid: '929' });
  const res = await post(listener.url, body, json);
  assert.equal(res.status, 200);
  const fanOut = res.body.jobId as string;
  assert.match(await failed(listener, `${fanOut}-to-crm`), /destination still failing: crm \(/);
  // A catch-up job for accounting (as `replay --destination` adds it) of a delivery it has not taken (its ledger has
  // no entry for it), refused there: a dead letter of accounting's.
  accounting.answer = answerWith(400);
  const job = await listener.queue.getJob(fanOut);
  assert.ok(job);
  const missed = `${fanOut}-missed`;
  const catchUp = await listener.queue.add(
    job.name,
    { ...job.data, deliveryId: missed, onlyDestination: 'accounting' },
    { jobId: `${missed}-to-accounting-1`, attempts: 1 },
  );
  assert.match(await failed(listener, catchUp.id as string), /destination refused the event: accounting \(/);

  const api = await get(listener, '/admin/api/destinations', AUTH);
  assert.equal(api.status, 200);
  const report = (await api.json()) as { at: string; destinations: Shown[] };
  const [shownAccounting, shownCrm] = report.destinations;
  assert.deepEqual(
    report.destinations.map((d) => d.name),
    ['accounting', 'crm'],
  );
  assert.equal(shownCrm?.breaker, 'open');
  assert.equal(shownCrm?.failures, 1);
  const probeIn = Date.parse(shownCrm?.nextProbeAt ?? '') - Date.parse(report.at);
  assert.ok(probeIn > 3_000_000 && probeIn <= 3_600_000, `next probe in ${probeIn} ms`);
  assert.equal(shownCrm?.deadLetters, 1, "crm's retry job");
  assert.deepEqual(shownCrm?.events, ['invoice.*']);
  assert.equal(shownCrm?.url, crm.url);
  assert.equal(shownCrm?.replay, 'sellsy-webhooks replay --destination crm');
  assert.equal(shownAccounting?.breaker, 'closed');
  assert.equal(shownAccounting?.nextProbeAt, null);
  assert.equal(shownAccounting?.deadLetters, 1, 'the catch-up job (the fan-out job was sent there)');
  assert.equal(await wouldSend(env, listener, 'accounting'), 1, 'as many as replay --destination would send');
  assert.equal(await wouldSend(env, listener, 'crm'), 1);
  assert.deepEqual(shownAccounting?.events, ['*', 'unknown']);
  assert.equal(shownAccounting?.url, `${accounting.url}/a&b'c`, 'scheme, host and path; no query string');
  assert.ok(!JSON.stringify(report).includes(QUERY_TOKEN));

  // stats reads the same figures.
  const statsReport = await collectStats(
    loadConfig({ ...env, REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName }),
  );
  assert.deepEqual(
    statsReport.destinations.map((d) => [d.name, d.breaker, d.failures, d.nextProbeAt, d.deadLetters]),
    report.destinations.map((d) => [d.name, d.breaker, d.failures, d.nextProbeAt, d.deadLetters]),
  );

  const page = await get(listener, '/admin/destinations', AUTH);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /^text\/html; charset=utf-8/);
  assert.equal(page.headers.get('x-frame-options'), 'DENY');
  const html = await page.text();
  const row = (name: string) => new RegExp(`<tr class="(\\w+)"><th scope="row">${name}</th>(.*?)</tr>`).exec(html);
  const crmRow = row('crm');
  assert.ok(crmRow, html);
  assert.equal(crmRow[1], 'open');
  assert.match(
    crmRow[2] ?? '',
    /<strong class="open">OPEN<\/strong> after 1 failures in a row; paused, next probe in \d+ s/,
  );
  assert.match(crmRow[2] ?? '', /<td class="number">1<\/td><td><code>sellsy-webhooks replay --destination crm<\/code>/);
  assert.match(crmRow[2] ?? '', /<code>invoice\.\*<\/code>/);
  const accountingRow = row('accounting');
  assert.ok(accountingRow, html);
  assert.equal(accountingRow[1], 'closed');
  assert.match(accountingRow[2] ?? '', /<td>closed<\/td>/);
  assert.match(accountingRow[2] ?? '', /every event/);
  assert.ok(html.includes(`<code>${accounting.url}/a&#38;b&#39;c</code>`), 'the URL escaped');
  assert.ok(!html.includes("a&b'c"), 'never raw');
  assert.ok(!html.includes(QUERY_TOKEN), 'the query string is never shown');

  // The board links here from its header menu (its UI config, embedded in its page).
  const board = await (await get(listener, '/admin', AUTH)).text();
  assert.match(board, /"miscLinks":\[\{"text":"Destinations","url":"\/admin\/destinations"\}\]/);
  assert.equal((await get(listener, '/admin/', AUTH)).status, 200, 'the page links back to the board at ./');
});

/** Two destinations taking every event, no breaker to speak of: each failure is a plain 503. */
function plainFile(accounting: Receiver, crm: Receiver, path = join(tempDir(), 'destinations.yaml')): string {
  writeFileSync(
    path,
    [
      'destinations:',
      '  - name: accounting',
      `    url: ${accounting.url}`,
      `    secret: \${ACCOUNTING_SECRET}`,
      '  - name: crm',
      `    url: ${crm.url}`,
      `    secret: \${CRM_SECRET}`,
      '',
    ].join('\n'),
  );
  return path;
}

async function shown(listener: TestListener): Promise<{ fileProblem: string | null; destinations: Shown[] }> {
  const res = await get(listener, '/admin/api/destinations', AUTH);
  assert.equal(res.status, 200);
  return (await res.json()) as { fileProblem: string | null; destinations: Shown[] };
}

async function deadLettersShown(listener: TestListener): Promise<Record<string, number>> {
  return Object.fromEntries((await shown(listener)).destinations.map((d) => [d.name, d.deadLetters]));
}

/** What `replay --destination NAME` would send now (a dry run: nothing is queued). */
async function wouldSend(env: Record<string, string>, listener: TestListener, destination: string): Promise<number> {
  const config = loadConfig({ ...env, REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName });
  const filter: ReplayFilter = { ids: new Set(), name: null, since: null, until: null, destination };
  return (await replay(config, filter, true, () => undefined)).matched;
}

test('a dead letter counts once per delivery, however many catch-up runs failed, and no more once a catch-up delivered it: as replay --destination would send', async () => {
  const accounting = await receiver(200);
  const crm = await receiver(503);
  const env = { ...secrets, DESTINATIONS_FILE: plainFile(accounting, crm), JOB_ATTEMPTS: '1', JOB_BACKOFF_MS: '50' };
  const listener = await listenerWith({ ...LOGIN, ...env });
  const worker = await startTestWorker(listener, env);
  cleanup.push(() => worker.close());
  const config = loadConfig({ ...env, REDIS_URL: redis.url, QUEUE_NAME: listener.config.queueName });
  const filter: ReplayFilter = { ids: new Set(), name: null, since: null, until: null, destination: 'crm' };

  const body = JSON.stringify({ event: 'step', relatedtype: 'invoice', relatedid: '7', corpid: '929' });
  const res = await post(listener.url, body, json);
  assert.equal(res.status, 200);
  const id = res.body.jobId as string;
  await failed(listener, `${id}-to-crm`);
  assert.deepEqual(await deadLettersShown(listener), { accounting: 0, crm: 1 });

  // Two catch-up runs that fail too: three dead letters of crm's, one delivery.
  for (let run = 1; run <= 2; run++) {
    assert.equal((await replay(config, filter, false, () => undefined)).replayed, 1);
    await waitFor(
      async () => (await listener.queue.getFailedCount()) === 1 + run,
      20_000,
      `catch-up run ${run} failed`,
    );
  }
  assert.deepEqual(await deadLettersShown(listener), { accounting: 0, crm: 1 });
  assert.equal(await wouldSend(env, listener, 'crm'), 1);
  assert.equal(await wouldSend(env, listener, 'accounting'), 0);

  // crm is back: a catch-up delivers it, and the ledger says `sent`; the dead letters stay, counted no more.
  crm.answer = answerWith(200);
  const before = crm.received.length;
  assert.equal((await replay(config, filter, false, () => undefined)).replayed, 1);
  await waitFor(() => crm.received.length > before, 20_000, 'crm took it');
  await waitFor(async () => (await deadLettersShown(listener)).crm === 0, 20_000, 'no dead letter of crm shown');
  assert.equal(await listener.queue.getFailedCount(), 3, 'the dead letters themselves are still there');
  assert.equal(await wouldSend(env, listener, 'crm'), 0);
  const statsReport = await collectStats(config);
  assert.deepEqual(
    statsReport.destinations.map((d) => [d.name, d.deadLetters]),
    [
      ['accounting', 0],
      ['crm', 0],
    ],
  );
});

test('an old fan-out dead letter naming every destination still failing counts for those the ledger does not say took it, as replay --destination sends it', async () => {
  const accounting = await receiver(200);
  const crm = await receiver(200);
  const env = { ...secrets, DESTINATIONS_FILE: plainFile(accounting, crm), JOB_ATTEMPTS: '1' };
  const listener = await listenerWith({ ...LOGIN, ...env });
  // The shape a fan-out job failed with before each destination had a retry job of its own: one job, its reason
  // listing the destinations still failing, its ledger saying which took it.
  const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
  cleanup.push(async () => connection.disconnect());
  const base = `${listener.config.queuePrefix}:${listener.config.queueName}`;
  const old = new Worker(
    listener.config.queueName,
    async (job) => {
      await new RedisDestinationLedger(connection, base, 3600).record(
        job.data.deliveryId,
        new Map([
          ['accounting', 'sent'],
          ['crm', 'retrying'],
        ]),
      );
      throw new Error('[forward *] destinations still failing: crm (HTTP 503); sent to accounting');
    },
    { connection, prefix: listener.config.queuePrefix },
  );
  cleanup.push(() => old.close());
  const body = JSON.stringify({ event: 'step', relatedtype: 'invoice', relatedid: '8', corpid: '929' });
  const res = await post(listener.url, body, json);
  assert.equal(res.status, 200);
  assert.match(await failed(listener, res.body.jobId as string), /still failing: crm \(/);
  await old.close();

  assert.deepEqual(await deadLettersShown(listener), { accounting: 0, crm: 1 });
  assert.equal(await wouldSend(env, listener, 'crm'), 1);
  assert.equal(await wouldSend(env, listener, 'accounting'), 0);
});

test('the page lists DESTINATIONS_FILE as it is now: a destination added or removed shows without a restart; a bad file is shown as such, with the list read at start', async () => {
  const accounting = await receiver(200);
  const crm = await receiver(200);
  const file = plainFile(accounting, crm);
  const listener = await listenerWith({ ...LOGIN, ...secrets, DESTINATIONS_FILE: file });
  const names = async () => (await shown(listener)).destinations.map((d) => d.name);
  assert.deepEqual(await names(), ['accounting', 'crm']);

  // crm removed, billing added (as before a `destinations reload`).
  const billing = await receiver(200);
  writeFileSync(
    file,
    [
      'destinations:',
      '  - name: accounting',
      `    url: ${accounting.url}`,
      `    secret: \${ACCOUNTING_SECRET}`,
      '  - name: billing',
      `    url: ${billing.url}/in`,
      `    secret: \${ACCOUNTING_SECRET}`,
      '    events: ["invoice.*"]',
      '',
    ].join('\n'),
  );
  const now = await shown(listener);
  assert.equal(now.fileProblem, null);
  assert.deepEqual(
    now.destinations.map((d) => [d.name, d.url, d.events, d.deadLetters]),
    [
      ['accounting', accounting.url, ['*', 'unknown'], 0],
      ['billing', `${billing.url}/in`, ['invoice.*'], 0],
    ],
  );
  assert.match(await (await get(listener, '/admin/destinations', AUTH)).text(), /<th scope="row">billing<\/th>/);

  // A file a reload would refuse: said so, and the destinations read at start shown.
  writeFileSync(file, `destinations:\n  - name: billing\n    url: not a url\n    secret: \${ACCOUNTING_SECRET}\n`);
  const bad = await shown(listener);
  assert.match(bad.fileProblem ?? '', /^DESTINATIONS_FILE: .*billing/);
  assert.deepEqual(
    bad.destinations.map((d) => d.name),
    ['accounting', 'crm'],
  );
  const html = await (await get(listener, '/admin/destinations', AUTH)).text();
  assert.match(html, /<p class="problem"><strong>DESTINATIONS_FILE cannot be used as it is now<\/strong>/);
  assert.match(html, /<th scope="row">crm<\/th>/);
});

test('the destinations page and its JSON need the dashboard login; without destinations they say so', async () => {
  const listener = await listenerWith(LOGIN);
  for (const path of ['/admin/destinations', '/admin/api/destinations']) {
    const anonymous = await get(listener, path);
    assert.equal(anonymous.status, 401, path);
    assert.equal(anonymous.headers.get('www-authenticate'), 'Basic realm="sellsy-webhooks"');
    const wrong = `Basic ${Buffer.from(`${USER}:nope`).toString('base64')}`;
    assert.equal((await get(listener, path, wrong)).status, 401, path);
  }
  assert.deepEqual(
    ((await (await get(listener, '/admin/api/destinations', AUTH)).json()) as { destinations: [] }).destinations,
    [],
  );
  const html = await (await get(listener, '/admin/destinations', AUTH)).text();
  assert.match(html, /No destination is configured in this process/);
  assert.doesNotMatch(await (await get(listener, '/admin', AUTH)).text(), /miscLinks/, 'no link to an empty page');
});

test('without a dashboard login the destinations page is a 404 like the rest of /admin', async () => {
  const listener = await listenerWith({});
  assert.equal((await get(listener, '/admin/destinations', AUTH)).status, 404);
});

test('with Redis down the destinations page and its JSON answer 503 at once', async () => {
  const own = await startRedis();
  cleanup.push(() => own.destroy());
  const listener = await startTestListener(own.url, LOGIN);
  cleanup.push(() => listener.close());
  await untilReady(listener);
  assert.equal((await get(listener, '/admin/destinations', AUTH)).status, 200);
  await own.stop();
  for (const path of ['/admin/destinations', '/admin/api/destinations']) {
    await waitFor(async () => (await get(listener, path, AUTH)).status === 503, 10_000, `${path} 503`);
  }
});

test('escapeHtml and shownUrl: nothing of a URL but scheme, host and path; every HTML-special character escaped', () => {
  assert.equal(escapeHtml(`<a href="x">&'</a>`), '&#60;a href=&#34;x&#34;&#62;&#38;&#39;&#60;/a&#62;');
  assert.equal(
    shownUrl('https://crm.internal:8443/hooks/sellsy?key=abc#frag'),
    'https://crm.internal:8443/hooks/sellsy',
  );
});

test("a real browser reaches the destinations page from the board's header menu and sees the open breaker", async () => {
  const accounting = await receiver(200);
  const crm = await receiver(503);
  const file = destinationsFile(accounting, crm);
  const listener = await listenerWith({ ...LOGIN, ...secrets, DESTINATIONS_FILE: file.path });
  // The breaker opened as a worker opens it: one failure of crm (breaker_failures: 1).
  const client = new Redis(redis.url);
  cleanup.push(async () => client.disconnect());
  const base = `${listener.config.queuePrefix}:${listener.config.queueName}`;
  assert.equal(await new RedisDestinationBreaker(client, base).failure('crm', 1, 3_600_000), true);

  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  try {
    const origin = new URL(listener.url).origin;
    const context = await browser.newContext({ httpCredentials: { username: USER, password: PASSWORD } });
    // Hermetic: Bull Board's page asks Google Fonts for its typeface; nothing leaves the machine.
    await context.route(
      (url) => url.origin !== origin,
      (route) => route.abort(),
    );
    const page = await context.newPage();
    await page.goto(`${listener.url}/admin`);
    // Bull Board's header menu (its last action button) holds the link.
    await page.locator('header ul li').last().locator('button').click({ timeout: 15_000 });
    await page.getByText('Destinations', { exact: true }).click();
    await page.waitForURL(`${listener.url}/admin/destinations`);
    const row = page.locator('tr', { has: page.locator('th', { hasText: 'crm' }) });
    assert.match((await row.textContent()) ?? '', /OPEN after 1 failures in a row; paused, next probe in \d+ s/);
    assert.match((await page.locator('tr', { hasText: 'accounting' }).textContent()) ?? '', /a&b'c/);
    await page.getByText('← queues').click();
    await page.waitForURL(`${listener.url}/admin/`);
    await context.close();
  } finally {
    await browser.close();
  }
});
