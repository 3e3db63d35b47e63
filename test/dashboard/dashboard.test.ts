/**
 * The admin dashboard (Bull Board at /admin): off without credentials, behind Basic auth or a bearer token,
 * read-only unless ADMIN_ALLOW_RETRIES, never held by a Redis that is down; and rendered by a real browser, which
 * also takes the screenshot in docs/dashboard.png.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { chromium } from 'playwright-core';
import { LOGIN_FAILURE_WINDOW_MS, LOGIN_FAILURES_ALLOWED } from '../../src/dashboard/dashboard.ts';
import { PermanentError } from '../../src/errors.ts';
import type { WebhookJobData } from '../../src/queue/contract.ts';
import { recordJobOptions, recordKeyOf, recordQueueName } from '../../src/queue/records.ts';
import { post, startTestListener, type TestListener, untilReady } from '../helpers/listener.ts';
import { freePort, type RedisServer, startRedis } from '../helpers/redis-server.ts';
import { waitFor } from '../helpers/wait.ts';
import { json, recordBody, startTestWorker } from '../helpers/worker.ts';

const USER = 'admin';
const PASSWORD = 'correct horse battery staple';
const TOKEN = 'tok_0123456789abcdefghijklmnop';
const LOGIN = { ADMIN_USER: USER, ADMIN_PASSWORD: PASSWORD };
const CHROMIUM = '/usr/bin/chromium';
// The README's picture is rewritten only on request (UPDATE_SCREENSHOT=1): each run shows another job id and time.
const SCREENSHOT =
  process.env.UPDATE_SCREENSHOT === '1'
    ? fileURLToPath(new URL('../../docs/dashboard.png', import.meta.url))
    : join(tmpdir(), `sellsy-dashboard-${process.pid}.png`);
const DELIVERY = '{"relatedtype":"invoice","event":"step","relatedid":"42","corpid":"929"}';

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.destroy();
});

async function withListener(env: Record<string, string>, body: (listener: TestListener) => Promise<void>) {
  const listener = await startTestListener(redis.url, env);
  try {
    await untilReady(listener);
    await body(listener);
  } finally {
    await listener.close();
  }
}

function get(listener: TestListener, path: string, authorization?: string, method = 'GET') {
  return fetch(`${listener.url}${path}`, { method, headers: authorization ? { authorization } : {} });
}

async function deliver(listener: TestListener, body = DELIVERY): Promise<string> {
  const res = await post(listener.url, body, json);
  assert.equal(res.status, 200);
  return res.body.jobId as string;
}

/** A delivery whose job failed for good (JOB_ATTEMPTS=1 in the listener's env), or completed with `succeed`; the
 * worker is closed again. */
async function failedJob(listener: TestListener, succeed = false): Promise<string> {
  const jobId = await deliver(listener, succeed ? DELIVERY.replace('"42"', '"43"') : DELIVERY);
  const state = succeed ? 'completed' : 'failed';
  const worker = await startTestWorker(
    listener,
    {},
    {
      '*': async () => {
        if (!succeed) throw new PermanentError('x');
      },
    },
  );
  try {
    await waitFor(async () => (await listener.queue.getJobState(jobId)) === state, 15_000, `job ${jobId} ${state}`);
  } finally {
    await worker.close();
  }
  return jobId;
}

test('without credentials configured, /admin is a 404', async () => {
  await withListener({}, async (listener) => {
    assert.equal(listener.config.admin, null);
    for (const path of ['/admin', '/admin/', '/admin/api/queues']) {
      assert.equal((await get(listener, path, basic(USER, PASSWORD))).status, 404, path);
    }
  });
});

test('with a login, a request without credentials is a 401 that asks for Basic auth', async () => {
  await withListener(LOGIN, async (listener) => {
    for (const path of ['/admin', '/admin/api/queues', '/admin/static/images/logo.svg', '/admin/no-such-page']) {
      const res = await get(listener, path);
      assert.equal(res.status, 401, path);
      assert.equal(res.headers.get('www-authenticate'), 'Basic realm="sellsy-webhooks"');
    }
  });
});

test('with a login, a wrong password or user is a 401', async () => {
  await withListener(LOGIN, async (listener) => {
    assert.equal((await get(listener, '/admin', basic(USER, `${PASSWORD}x`))).status, 401);
    assert.equal((await get(listener, '/admin', basic('root', PASSWORD))).status, 401);
    assert.equal((await get(listener, '/admin', basic(USER, ''))).status, 401);
    assert.equal((await get(listener, '/admin', 'Basic not-base64-at-all')).status, 401);
    assert.equal((await get(listener, '/admin', `Bearer ${PASSWORD}`)).status, 401);
    assert.ok(listener.logs.some((l) => l.msg === 'dashboard: wrong credentials'));
    assert.ok(!JSON.stringify(listener.logs).includes(PASSWORD), 'the password is never logged');
  });
});

test('with the right login, /admin is the Bull Board page and its assets and API are served', async () => {
  await withListener(LOGIN, async (listener) => {
    const auth = basic(USER, PASSWORD);
    const page = await get(listener, '/admin', auth);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    const html = await page.text();
    assert.match(html, /<base href="\/admin\/"/);
    const script = /src="(static\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(script, 'the page loads its UI bundle');
    const bundle = await get(listener, `/admin/${script}`, auth);
    assert.equal(bundle.status, 200);
    assert.match(bundle.headers.get('content-type') ?? '', /javascript/);

    const api = await get(listener, '/admin/api/queues', auth);
    assert.equal(api.status, 200);
    const { queues } = (await api.json()) as { queues: { name: string }[] };
    assert.deepEqual(queues.map((q) => q.name).sort(), [
      listener.config.queueName,
      recordQueueName(listener.config.queueName),
    ]);
  });
});

test('the bearer token opens the dashboard, alone or beside a login', async () => {
  await withListener({ ADMIN_TOKEN: TOKEN }, async (listener) => {
    assert.equal((await get(listener, '/admin', `Bearer ${TOKEN}`)).status, 200);
    assert.equal((await get(listener, '/admin/api/queues', `Bearer ${TOKEN}`)).status, 200);
    const refused = await get(listener, '/admin', `Bearer ${TOKEN.slice(0, -1)}`);
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get('www-authenticate'), 'Bearer realm="sellsy-webhooks"');
    assert.equal((await get(listener, '/admin', basic(USER, PASSWORD))).status, 401);
  });
  await withListener({ ...LOGIN, ADMIN_TOKEN: TOKEN }, async (listener) => {
    assert.equal((await get(listener, '/admin', `Bearer ${TOKEN}`)).status, 200);
    assert.equal((await get(listener, '/admin', basic(USER, PASSWORD))).status, 200);
  });
});

test('read-only by default: retrying a failed job is refused and the job stays failed', async () => {
  await withListener({ ...LOGIN, JOB_ATTEMPTS: '1' }, async (listener) => {
    const auth = basic(USER, PASSWORD);
    const jobId = await failedJob(listener);
    const name = listener.config.queueName;
    const { queues } = (await (await get(listener, '/admin/api/queues', auth)).json()) as {
      queues: { readOnlyMode: boolean; allowRetries: boolean }[];
    };
    assert.ok(queues.every((q) => q.readOnlyMode && !q.allowRetries));
    for (const path of [`/admin/api/queues/${name}/${jobId}/retry`, `/admin/api/queues/${name}/retry/failed`]) {
      const res = await get(listener, path, auth, 'PUT');
      assert.equal(res.status, 405, path);
      assert.deepEqual(await res.json(), { error: { key: 'ERRORS.QUEUE_READ_ONLY' } });
    }
    assert.equal(await listener.queue.getJobState(jobId), 'failed');
  });
});

test('with ADMIN_ALLOW_RETRIES a failed job can be retried, and nothing else can be changed', async () => {
  await withListener({ ...LOGIN, JOB_ATTEMPTS: '1', ADMIN_ALLOW_RETRIES: 'true' }, async (listener) => {
    const auth = basic(USER, PASSWORD);
    const jobId = await failedJob(listener);
    const name = listener.config.queueName;
    for (const [method, path] of [
      ['PUT', `/admin/api/queues/${name}/empty`],
      ['PUT', `/admin/api/queues/${name}/obliterate`],
      ['PUT', `/admin/api/queues/${name}/${jobId}/clean`],
      ['PUT', `/admin/api/queues/${name}/pause`],
      ['POST', `/admin/api/queues/${name}/add`],
      // Completed jobs are handled deliveries: running them again is not a retry of a dead letter.
      ['PUT', `/admin/api/queues/${name}/retry/completed`],
    ] as const) {
      assert.equal((await get(listener, path, auth, method)).status, 405, `${method} ${path}`);
    }
    assert.equal(await listener.queue.getJobState(jobId), 'failed');
    const completed = await failedJob(listener, true);
    assert.equal(await listener.queue.getJobState(completed), 'completed');
    assert.equal((await get(listener, `/admin/api/queues/${name}/${completed}/retry`, auth, 'PUT')).status, 405);
    assert.equal(await listener.queue.getJobState(completed), 'completed');

    const res = await get(listener, `/admin/api/queues/${name}/${jobId}/retry`, auth, 'PUT');
    assert.equal(res.status, 204);
    assert.equal(await listener.queue.getJobState(jobId), 'waiting');
  });
});

/** A request as if from `address` (inject sets the socket's remote address; no network involved). */
function injectFrom(listener: TestListener, address: string, authorization?: string) {
  return listener.app.inject({
    method: 'GET',
    url: '/admin',
    remoteAddress: address,
    headers: authorization ? { authorization } : {},
  });
}

test('after too many wrong logins an address gets 429 with Retry-After, even with the right password; another address is unaffected', async () => {
  await withListener(LOGIN, async (listener) => {
    const attacker = '203.0.113.7';
    for (let i = 0; i < LOGIN_FAILURES_ALLOWED; i++) {
      assert.equal((await injectFrom(listener, attacker, basic(USER, `guess-${i}`))).statusCode, 401, `guess ${i}`);
    }
    const refused = await injectFrom(listener, attacker, basic(USER, PASSWORD));
    assert.equal(refused.statusCode, 429);
    assert.equal(refused.json().error, 'too_many_failed_logins');
    const retryAfter = Number(refused.headers['retry-after']);
    assert.ok(retryAfter > 0 && retryAfter <= LOGIN_FAILURE_WINDOW_MS / 1000, `Retry-After: ${retryAfter}`);
    assert.equal((await injectFrom(listener, attacker)).statusCode, 429, 'without credentials too');
    assert.equal((await injectFrom(listener, '198.51.100.2', basic(USER, PASSWORD))).statusCode, 200);
    assert.ok(
      listener.logs.some((l) => l.msg === 'dashboard: wrong credentials; too many, the address is refused for a while'),
    );
  });
});

test('requests without credentials and successful logins are not counted as failed logins', async () => {
  await withListener(LOGIN, async (listener) => {
    const operator = '198.51.100.9';
    for (let i = 0; i < LOGIN_FAILURES_ALLOWED * 2; i++) {
      assert.equal((await injectFrom(listener, operator)).statusCode, 401);
      assert.equal((await injectFrom(listener, operator, basic(USER, PASSWORD))).statusCode, 200);
    }
    for (let i = 0; i < LOGIN_FAILURES_ALLOWED - 1; i++) {
      assert.equal((await injectFrom(listener, operator, basic(USER, 'typo'))).statusCode, 401);
    }
    assert.equal((await injectFrom(listener, operator, basic(USER, PASSWORD))).statusCode, 200);
  });
});

test('every answer under /admin forbids framing (CSP frame-ancestors and X-Frame-Options)', async () => {
  await withListener(LOGIN, async (listener) => {
    const auth = basic(USER, PASSWORD);
    const page = await get(listener, '/admin', auth);
    const script = /src="(static\/[^"]+\.js)"/.exec(await page.text())?.[1];
    const answers = [
      ['page', page],
      ['asset', await get(listener, `/admin/${script}`, auth)],
      ['api', await get(listener, '/admin/api/queues', auth)],
      ['unknown path', await get(listener, '/admin/no-such-page', auth)],
      ['401', await get(listener, '/admin')],
      ['405', await get(listener, `/admin/api/queues/${listener.config.queueName}/empty`, auth, 'PUT')],
    ] as const;
    for (const [what, res] of answers) {
      assert.equal(res.headers.get('content-security-policy'), "frame-ancestors 'none'", what);
      assert.equal(res.headers.get('x-frame-options'), 'DENY', what);
    }
    assert.deepEqual(
      answers.map(([, res]) => res.status),
      [200, 200, 200, 404, 401, 405],
    );
    for (let i = 0; i < LOGIN_FAILURES_ALLOWED; i++) await injectFrom(listener, '203.0.113.8', basic(USER, 'x'));
    const limited = await injectFrom(listener, '203.0.113.8', auth);
    assert.equal(limited.statusCode, 429);
    assert.equal(limited.headers['x-frame-options'], 'DENY');
  });
});

test("the anti-framing headers are the dashboard's only: the probes do not get them", async () => {
  await withListener(LOGIN, async (listener) => {
    const res = await get(listener, '/healthz');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-frame-options'), null);
  });
});

test('with the dashboard on and TRUST_PROXY=false, the start-up log warns that its credentials travel in clear without a TLS proxy', async () => {
  const warning = (logs: Record<string, unknown>[]) =>
    logs.find((l) => l.level === 40 && String(l.msg).startsWith('the admin dashboard is on and TRUST_PROXY is false'));
  await withListener(LOGIN, async (listener) => {
    const line = warning(listener.logs);
    assert.ok(line, 'warned');
    assert.match(String(line.msg), /in clear/);
    assert.match(String(line.msg), /TRUST_PROXY=true/);
  });
  await withListener({ ...LOGIN, TRUST_PROXY: 'true' }, async (listener) => {
    assert.equal(warning(listener.logs), undefined, 'behind a proxy: no warning');
  });
  await withListener({}, async (listener) => {
    assert.equal(warning(listener.logs), undefined, 'dashboard off: no warning');
  });
});

test('retrying a record dead letter from the dashboard adds it again keyed on its record, never beside a newer job of that record', async () => {
  await withListener({ ...LOGIN, JOB_ATTEMPTS: '1', ADMIN_ALLOW_RETRIES: 'true' }, async (listener) => {
    const auth = basic(USER, PASSWORD);
    const name = recordQueueName(listener.config.queueName);
    const records = new Queue<WebhookJobData>(name, { connection: { url: redis.url } });
    try {
      const worker = await startTestWorker(
        listener,
        { RECORD_ORDER: 'latest' },
        {
          '*': async () => {
            throw new PermanentError('downstream refused');
          },
        },
      );
      try {
        await deliver(listener, recordBody('77', 1));
        await deliver(listener, recordBody('78', 1));
        await waitFor(async () => (await records.getFailedCount()) === 2, 15_000, 'two record dead letters');
      } finally {
        await worker.close();
      }
      const [first, second] = await records.getFailed();
      assert.ok(first?.id && second?.id);
      // A newer delivery of the first record waits meanwhile, added as the worker adds one (no worker runs now).
      const newer = await records.add(
        first.name,
        { ...first.data, deliveryId: 'newer' },
        recordJobOptions(listener.config, recordKeyOf(first.data), 'newer-job'),
      );
      assert.equal(await newer.getState(), 'waiting');

      const res = await get(listener, `/admin/api/queues/${name}/${first.id}/retry`, auth, 'PUT');
      assert.equal(res.status, 204);
      assert.equal(await records.getJobState(first.id), 'unknown', 'the dead letter is gone, not retried in place');
      const waiting = (await records.getWaiting()).filter((job) => recordKeyOf(job.data) === recordKeyOf(first.data));
      assert.deepEqual(
        waiting.map((job) => job.id),
        ['newer-job'],
        'one waiting job for the record: the newer delivery, which the dead letter joins',
      );

      const all = await get(listener, `/admin/api/queues/${name}/retry/failed`, auth, 'PUT');
      assert.equal(all.status, 200);
      assert.deepEqual(await all.json(), { retried: 1, skipped: 0 });
      assert.equal(await records.getJobState(second.id), 'unknown');
      assert.equal(await records.getFailedCount(), 0);
      const requeued = (await records.getWaiting()).filter((job) => recordKeyOf(job.data) === recordKeyOf(second.data));
      assert.equal(requeued.length, 1, 'the second record waits again, once');
    } finally {
      await records.close();
    }
  });
});

test('with Redis down, the dashboard API answers 503 within a second, the listener goes on and closes', async () => {
  const own = await startRedis();
  const listener = await startTestListener(own.url, LOGIN);
  const auth = basic(USER, PASSWORD);
  try {
    await untilReady(listener);
    await waitFor(async () => (await get(listener, '/admin/api/queues', auth)).status === 200, 5000, 'dashboard');
    await own.stop();
    await waitFor(async () => (await get(listener, '/admin/api/queues', auth)).status === 503, 5000, '503');
    const started = performance.now();
    const res = await get(listener, '/admin/api/queues', auth);
    assert.equal(res.status, 503);
    assert.ok(performance.now() - started < 4000);
    assert.equal((await get(listener, '/admin', auth)).status, 200);
    assert.equal((await get(listener, '/healthz')).status, 200);
  } finally {
    const closing = performance.now();
    await listener.close();
    assert.ok(performance.now() - closing < 5000, 'the app closes without waiting for Redis');
    await own.destroy();
  }
});

test('with Redis unreachable from the start, the dashboard answers 503 and the app closes', async () => {
  const listener = await startTestListener(`redis://127.0.0.1:${await freePort()}`, LOGIN);
  try {
    const started = performance.now();
    assert.equal((await get(listener, '/admin/api/queues', basic(USER, PASSWORD))).status, 503);
    assert.ok(performance.now() - started < 4000);
  } finally {
    const closing = performance.now();
    await listener.close();
    assert.ok(performance.now() - closing < 5000, 'the app closes without waiting for Redis');
  }
});

test('a real browser renders the dashboard with the delivered job (screenshot: docs/dashboard.png)', async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `The browser test drives headless Chromium at ${CHROMIUM}, which is missing. Install it ` +
        '(Debian/Ubuntu: apt-get install -y --no-install-recommends chromium; .ci/run does this).',
    );
  }
  // A readable queue name in the screenshot; this file's Redis is its own, so no other test shares the queue.
  await withListener({ ...LOGIN, QUEUE_NAME: 'sellsy-webhooks' }, async (listener) => {
    await deliver(listener);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    try {
      const origin = new URL(listener.url).origin;
      const context = await browser.newContext({
        httpCredentials: { username: USER, password: PASSWORD },
        viewport: { width: 1280, height: 800 },
        timezoneId: 'UTC',
        locale: 'en-GB',
      });
      // Hermetic: Bull Board's page asks Google Fonts for its typeface; nothing leaves the machine.
      await context.route(
        (url) => url.origin !== origin,
        (route) => route.abort(),
      );
      const page = await context.newPage();
      const response = await page.goto(`${listener.url}/admin`);
      assert.equal(response?.status(), 200);
      // Rendered by the UI bundle (not in the HTML): the ingest queue's card and the record queue's.
      await page.getByText(recordQueueName('sellsy-webhooks'), { exact: true }).first().waitFor({ timeout: 15_000 });
      await page.getByText('sellsy-webhooks', { exact: true }).first().waitFor();

      await page.goto(`${listener.url}/admin/queue/sellsy-webhooks`);
      await page.getByText('invoice.step', { exact: true }).first().waitFor({ timeout: 15_000 });
      await page.getByText('one job per delivery', { exact: false }).first().waitFor();
      await mkdir(dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT });
      const png = await readFile(SCREENSHOT);
      assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
      assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [1280, 800]);

      // Without a login the browser gets the 401 and its challenge; having no credentials to answer it with,
      // Chromium then ends the navigation with ERR_INVALID_AUTH_CREDENTIALS.
      const anonymous = await browser.newContext();
      const anonymousPage = await anonymous.newPage();
      const challenged = anonymousPage.waitForResponse(`${listener.url}/admin`);
      await anonymousPage.goto(`${listener.url}/admin`).catch(() => null);
      const refused = await challenged;
      assert.equal(refused.status(), 401);
      assert.equal(refused.headers()['www-authenticate'], 'Basic realm="sellsy-webhooks"');
      await anonymous.close();
      await context.close();
    } finally {
      await browser.close();
    }
  });
});
