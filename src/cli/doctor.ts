/**
 * `sellsy-webhooks doctor`: checks what the service depends on, one line per check:
 *
 *   ok|warn|fail  <check>: <finding>
 *         fix: <what to do>            (warn and fail only)
 *
 * then a count (`0 fail, 2 warn, 11 ok`). Checks, in this order: `signatures`, `handlers`; `redis` (reachable),
 * `redis version`, `redis eviction`, `redis aof`, `redis wait-aof`, `dead letters`, `workers` (skipped when Redis
 * does not answer); `spool`, `spool disk`, `spool contents` (one `spool` warning with SPOOL_MAX_BYTES=0); `postgres`
 * (with DATABASE_URL), `sellsy api` (with SELLSY_CLIENT_ID), `forward url` (with FORWARD_URL).
 *
 * It changes nothing, except a probe file created, fsynced and deleted in SPOOL_DIR (and SPOOL_DIR itself when it
 * did not exist, removed again), one Sellsy token request and one look-up of invoice 0, and one HEAD to FORWARD_URL.
 * Every network check has a deadline of a few seconds and they run side by side. No secret is printed: findings
 * show addresses with their password masked, and every line is scrubbed of the configured secrets besides.
 * Exit codes: 0 no check failed (warnings allowed), 1 at least one check failed.
 */
import { randomBytes } from 'node:crypto';
import { access, mkdir, open, rmdir, stat, statfs, unlink } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { Queue, RedisConnection } from 'bullmq';
import type { Redis } from 'ioredis';
import pg from 'pg';
import { type Config, signatureEnabled } from '../config/config.ts';
import { PermanentError, RetryLaterError } from '../errors.ts';
import { connectOrFail } from '../queue/connection.ts';
import { recordQueueInUse, recordQueueName } from '../queue/records.ts';
import { inspectDurability } from '../queue/redis.ts';
import { redactUrl } from '../redact.ts';
import { SellsyApi, statusOf } from '../sellsy/api.ts';
import { inspectSpool } from '../spool/spool.ts';
import { formatAge, formatBytes, oneLine } from './format.ts';
import { scrubbing } from './secrets.ts';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  status: CheckStatus;
  /** Stable name: `redis eviction`, `spool disk`… */
  check: string;
  finding: string;
  /** What to do; warn and fail only. */
  fix?: string;
}

export interface DoctorOptions {
  /** Colour the status words (ANSI): for a terminal. */
  color?: boolean;
}

/** Longest wait of each network check. */
const TIMEOUT_MS = 3000;
/** Longest wait for an HTTP service (Sellsy, the forward target), capped by its own configured timeout. */
const HTTP_TIMEOUT_MS = 5000;

const ok = (check: string, finding: string): CheckResult => ({ status: 'ok', check, finding });
const warn = (check: string, finding: string, fix: string): CheckResult => ({ status: 'warn', check, finding, fix });
/** The longest any group of checks may take. */
const CHECK_DEADLINE_MS = 15_000;

const fail = (check: string, finding: string, fix: string): CheckResult => ({ status: 'fail', check, finding, fix });

export async function doctor(
  config: Config,
  out: (line: string) => void,
  options: DoctorOptions = {},
): Promise<number> {
  const write = scrubbing(config, out);
  // Started together, printed in a fixed order: the slowest check bounds the run, not the sum of them.
  // Each check's own failure is caught where it starts: one that rejects while an earlier one is awaited is never
  // left unhandled.
  // And each has an overall deadline: a server that connects, then stalls, cannot hold doctor for long.
  const timers: NodeJS.Timeout[] = [];
  const guarded = (name: string, check: Promise<CheckResult[]>): Promise<CheckResult[]> =>
    Promise.race([
      check.catch((err: unknown) => [
        fail(name, `the check itself failed: ${describe(err)}`, 'report this with the output of doctor'),
      ]),
      new Promise<CheckResult[]>((resolve) => {
        timers.push(
          setTimeout(
            () =>
              resolve([
                fail(name, `no answer within ${CHECK_DEADLINE_MS / 1000} s`, `check that ${name} is not stalled`),
              ]),
            CHECK_DEADLINE_MS,
          ),
        );
      }),
    ]);
  const groups: Promise<CheckResult[]>[] = [
    guarded('config', configChecks(config)),
    guarded('redis', redisChecks(config)),
    guarded('spool', spoolChecks(config)),
  ];
  if (config.postgres) groups.push(guarded('postgres', postgresCheck(config.postgres)));
  if (config.sellsyApi) groups.push(guarded('sellsy api', sellsyCheck(config.sellsyApi)));
  if (config.forward) groups.push(guarded('forward url', forwardCheck(config.forward)));
  const tally: Record<CheckStatus, number> = { ok: 0, warn: 0, fail: 0 };
  for (const group of groups) {
    for (const result of await group) {
      tally[result.status]++;
      write(formatResult(result, options.color === true));
      if (result.fix !== undefined) write(`      fix: ${oneLine(result.fix, 400)}`);
    }
  }
  for (const timer of timers) clearTimeout(timer);
  write(`${tally.fail} fail, ${tally.warn} warn, ${tally.ok} ok`);
  return tally.fail > 0 ? 1 : 0;
}

const COLORS: Record<CheckStatus, string> = { ok: '\x1b[32m', warn: '\x1b[33m', fail: '\x1b[31m' };

function formatResult(result: CheckResult, color: boolean): string {
  const word = result.status.padEnd(4);
  const shown = color ? `${COLORS[result.status]}${word}\x1b[0m` : word;
  return `${shown}  ${result.check}: ${oneLine(result.finding, 400)}`;
}

// --- configuration --------------------------------------------------------------------------------------------

async function configChecks(config: Config): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const { keys, accountKeys, check, formScope } = config.signature;
  if (!signatureEnabled(config)) {
    results.push(
      warn(
        'signatures',
        'verification off (SELLSY_SIGN_KEY and SELLSY_ACCOUNT_KEYS unset): anything posted to the webhook URL becomes a job',
        'set SELLSY_SIGN_KEY to the sign_key of your Sellsy webhook (SELLSY_ACCOUNT_KEYS for several Sellsy accounts)',
      ),
    );
  } else {
    const what = [
      ...(keys.length > 0 ? [`${keys.length} key${keys.length > 1 ? 's' : ''}`] : []),
      ...(accountKeys.size > 0 ? [`keys for ${accountKeys.size} account${accountKeys.size > 1 ? 's' : ''}`] : []),
    ].join(', ');
    const where =
      check === 'listener'
        ? 'checked by the listener before the 200'
        : 'checked by the worker: badly signed deliveries are queued, then dead letters';
    results.push(
      ok('signatures', `verification on (${what}), ${where} (SIGNATURE_CHECK=${check}, form scope ${formScope})`),
    );
  }

  const builtIns = [
    ...(config.postgres ? ['postgres'] : []),
    ...(config.sellsyApi ? ['sellsy-fetch'] : []),
    ...(config.forward ? ['forward'] : []),
  ];
  const parts = [
    `built-in: ${builtIns.length > 0 ? builtIns.join(', ') : 'none'}`,
    `HANDLERS: ${config.worker.handlersModule ?? 'unset'}`,
    `RECORD_ORDER=${config.worker.recordOrder}`,
  ];
  const module = config.worker.handlersModule;
  if (module !== null) {
    const path = resolve(module);
    try {
      await access(path);
    } catch (err) {
      results.push(
        fail(
          'handlers',
          `${parts.join('; ')}: ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? describe(err)}); the worker will not start`,
          `set HANDLERS to the path of your handler module, relative to the directory the service starts in (${process.cwd()})`,
        ),
      );
      return results;
    }
  }
  if (builtIns.length === 0 && module === null) {
    parts.push('a worker completes each job without doing anything (your own consumers may read the queue instead)');
  }
  results.push(ok('handlers', parts.join('; ')));
  return results;
}

// --- Redis and the queue --------------------------------------------------------------------------------------

async function redisChecks(config: Config): Promise<CheckResult[]> {
  const where = redactUrl(config.redisUrl, 'REDIS_URL');
  const started = performance.now();
  let client: Redis;
  try {
    client = await connectOrFail(config, 'doctor', TIMEOUT_MS);
  } catch (err) {
    return [
      fail(
        'redis',
        `${(err as Error).message}; the Redis and queue checks were skipped`,
        `start Redis or point REDIS_URL at it (without Redis the listener can only spool deliveries and no job runs)`,
      ),
    ];
  }
  try {
    await client.ping();
    const results = [ok('redis', `${where} answers (${Math.round(performance.now() - started)} ms to connect)`)];
    const report = await inspectDurability(client, config.redisWaitAof);
    const serverInfo = await client.info('server');
    const valkey = /^valkey_version:(.*)$/m.exec(serverInfo)?.[1]?.trim() ?? null;
    const redisVersion = /^redis_version:(.*)$/m.exec(serverInfo)?.[1]?.trim() ?? report.version;
    const server =
      valkey !== null ? `Valkey ${valkey} (Redis ${redisVersion ?? '?'} compatible)` : `Redis ${redisVersion ?? '?'}`;

    const minimum = RedisConnection.minimumVersion;
    const recommended = RedisConnection.recommendedMinimumVersion;
    let queueUsable = true;
    if (redisVersion === null) {
      results.push(
        warn(
          'redis version',
          'unknown (INFO does not show redis_version)',
          `make sure it is ${recommended} or later (BullMQ needs ${minimum}, recommends ${recommended})`,
        ),
      );
    } else if (versionBelow(redisVersion, minimum)) {
      queueUsable = false;
      results.push(
        fail(
          'redis version',
          `${server}: BullMQ needs ${minimum} or later and refuses to run on it; the queue checks were skipped`,
          `upgrade Redis to ${recommended} or later (7.2 or later for REDIS_WAIT_AOF)`,
        ),
      );
    } else if (versionBelow(redisVersion, recommended)) {
      results.push(
        warn(
          'redis version',
          `${server}: BullMQ recommends ${recommended} or later`,
          `upgrade Redis to ${recommended} or later (7.2 or later for REDIS_WAIT_AOF)`,
        ),
      );
    } else {
      results.push(ok('redis version', `${server} (BullMQ needs ${minimum}, recommends ${recommended})`));
    }

    const policy = report.maxmemoryPolicy;
    if (policy === null) {
      results.push(
        warn(
          'redis eviction',
          'maxmemory-policy unknown (INFO does not show it)',
          'make sure it is noeviction: any other policy lets Redis delete queued jobs under memory pressure',
        ),
      );
    } else if (policy !== 'noeviction') {
      results.push(
        fail(
          'redis eviction',
          `maxmemory-policy ${policy}: when memory runs short Redis silently deletes keys, queued jobs included`,
          'set maxmemory-policy noeviction (redis-cli CONFIG SET maxmemory-policy noeviction, and in redis.conf; on a managed Redis, in its parameters)',
        ),
      );
    } else {
      results.push(
        ok(
          'redis eviction',
          'maxmemory-policy noeviction: a full Redis refuses writes (the listener then spools) instead of deleting jobs',
        ),
      );
    }

    results.push(aofCheck(report.aofEnabled, report.appendfsync));
    results.push(await waitAofCheck(config, client, redisVersion, server, report.aofEnabled));
    if (queueUsable) results.push(...(await queueChecks(config, client)));
    return results;
  } finally {
    client.disconnect();
  }
}

function aofCheck(enabled: boolean | null, appendfsync: string | null): CheckResult {
  if (enabled === null) {
    return warn(
      'redis aof',
      'unknown (INFO does not show aof_enabled)',
      'make sure appendonly is yes: without it a Redis restart loses the jobs accepted since the last snapshot',
    );
  }
  if (!enabled) {
    return warn(
      'redis aof',
      'appendonly no: a Redis restart loses the jobs accepted since the last snapshot',
      'set appendonly yes with appendfsync everysec (redis-cli CONFIG SET appendonly yes, and in redis.conf)',
    );
  }
  if (appendfsync === 'no') {
    return warn(
      'redis aof',
      'appendonly yes, appendfsync no: the OS decides when jobs reach the disk (about 30 s may be lost on a power loss)',
      'set appendfsync everysec (or always)',
    );
  }
  if (appendfsync === 'always') {
    return ok('redis aof', 'appendonly yes, appendfsync always: every job is on disk before Redis confirms it');
  }
  if (appendfsync === 'everysec') {
    return ok(
      'redis aof',
      'appendonly yes, appendfsync everysec: a Redis crash loses nothing, a power loss of its host at most the last second',
    );
  }
  return ok('redis aof', 'appendonly yes (appendfsync unknown: CONFIG GET is not allowed)');
}

async function waitAofCheck(
  config: Config,
  client: Redis,
  version: string | null,
  server: string,
  aofEnabled: boolean | null,
): Promise<CheckResult> {
  if (!config.redisWaitAof) {
    return ok('redis wait-aof', "off (REDIS_WAIT_AOF=false): a 200 does not wait for Redis's fsync");
  }
  const consequence = 'the listener queues nothing and spools every delivery';
  if (version !== null && versionBelow(version, '7.2.0')) {
    return fail(
      'redis wait-aof',
      `REDIS_WAIT_AOF=true needs WAITAOF (Redis 7.2 or later, Valkey 8 or later), and this is ${server}: ${consequence}`,
      'upgrade Redis, or set REDIS_WAIT_AOF=false (appendfsync always is the nearest guarantee on an older Redis)',
    );
  }
  if (aofEnabled === false) {
    return fail(
      'redis wait-aof',
      `REDIS_WAIT_AOF=true needs appendonly yes, and AOF is off: ${consequence}`,
      'set appendonly yes (redis-cli CONFIG SET appendonly yes, and in redis.conf), or REDIS_WAIT_AOF=false',
    );
  }
  try {
    // The producer's own probe: one local fsync, waiting at most 1 ms.
    await client.call('WAITAOF', '1', '0', '1');
  } catch (err) {
    return fail(
      'redis wait-aof',
      `REDIS_WAIT_AOF=true, and this Redis refused WAITAOF (${describe(err)}): ${consequence}`,
      'upgrade Redis (7.2 or later, Valkey 8 or later) with appendonly yes, or set REDIS_WAIT_AOF=false',
    );
  }
  return ok('redis wait-aof', 'on: a 200 waits until Redis has fsynced the job to its AOF (WAITAOF answers)');
}

async function queueChecks(config: Config, client: Redis): Promise<CheckResult[]> {
  const names = [config.queueName];
  if (await recordQueueInUse(config, client)) names.push(recordQueueName(config.queueName));
  const queues = names.map((name) => new Queue(name, { connection: client, prefix: config.queuePrefix }));
  for (const queue of queues) queue.on('error', () => undefined);
  try {
    const results: CheckResult[] = [];
    const failed = await Promise.all(queues.map((q) => q.getFailedCount()));
    const total = failed.reduce((a, b) => a + b, 0);
    if (total === 0) {
      results.push(ok('dead letters', `none (${names.join(', ')})`));
    } else {
      const counts = names.map((name, i) => `${failed[i]} in ${name}`).join(', ');
      const newest = (await Promise.all(queues.map((q) => q.getFailed(0, 0))))
        .flat()
        .sort((a, b) => (b.finishedOn ?? 0) - (a.finishedOn ?? 0))[0];
      const last = newest
        ? `; newest ${newest.name} failed ${newest.finishedOn ? new Date(newest.finishedOn).toISOString() : '?'}: ${oneLine(newest.failedReason ?? '', 120)}`
        : '';
      results.push(
        warn(
          'dead letters',
          `${counts}${last}`,
          'fix the cause (sellsy-webhooks stats lists the latest), then put them back: sellsy-webhooks replay',
        ),
      );
    }

    const idle: string[] = [];
    const seen: string[] = [];
    for (const queue of queues) {
      let count: number;
      try {
        count = await queue.getWorkersCount();
      } catch (err) {
        results.push(
          warn(
            'workers',
            `cannot tell: CLIENT LIST was refused (${describe(err)})`,
            'check the workers some other way (their logs, sellsy_webhooks_jobs_total)',
          ),
        );
        return results;
      }
      if (count === 0) idle.push(queue.name);
      else seen.push(`${count} on ${queue.name}`);
    }
    if (idle.length > 0) {
      const waiting = await queues[0]?.getJobCountByTypes('wait', 'prioritized', 'delayed');
      results.push(
        warn(
          'workers',
          `no worker connected to ${idle.join(', ')}${seen.length > 0 ? ` (${seen.join(', ')})` : ''}; ${waiting ?? 0} jobs wait in ${config.queueName}`,
          'start one: sellsy-webhooks work (or start: listener and worker in one process); a consumer of your own that is not a BullMQ worker is not seen here',
        ),
      );
    } else {
      results.push(ok('workers', seen.join(', ')));
    }
    return results;
  } finally {
    await Promise.all(queues.map((q) => q.close()));
  }
}

// --- spool ----------------------------------------------------------------------------------------------------

async function spoolChecks(config: Config): Promise<CheckResult[]> {
  const { dir, maxBytes } = config.spool;
  if (maxBytes === 0) {
    return [
      warn(
        'spool',
        `off (SPOOL_MAX_BYTES=0), no spool: while Redis is slow or down, deliveries are answered ENQUEUE_FAILURE_STATUS (${config.enqueueFailureStatus}) and kept only in the error log`,
        'set SPOOL_MAX_BYTES (1 GiB by default) so that deliveries are kept on disk while Redis is away',
      ),
    ];
  }
  const path = resolve(dir);
  const shown = dir === path ? dir : `${dir} (${path})`;
  const results: CheckResult[] = [];
  try {
    const existed = await probeDirectory(path);
    results.push(
      ok(
        'spool',
        existed
          ? `${shown}: writable (a probe file was written, fsynced and deleted)`
          : `${shown} does not exist yet; it can be created and written (the listener creates it)`,
      ),
    );
  } catch (err) {
    results.push(
      fail(
        'spool',
        `${shown} cannot be used: ${describe(err)}`,
        "point SPOOL_DIR at a directory on a persistent local disk that the service's user can create and write",
      ),
    );
    return results;
  }

  let status: Awaited<ReturnType<typeof inspectSpool>> | null = null;
  let statusError: string | null = null;
  try {
    status = await inspectSpool(path, maxBytes);
  } catch (err) {
    statusError = describe(err);
  }

  try {
    const fs = await statfs(await nearestExisting(path));
    const free = fs.bavail * fs.bsize;
    const inUse = status?.bytes ?? 0;
    const room = maxBytes - inUse;
    const finding = `${formatBytes(free)} free on its file system; SPOOL_MAX_BYTES ${formatBytes(maxBytes)}${inUse > 0 ? `, ${formatBytes(inUse)} in use` : ''}`;
    results.push(
      free < room
        ? warn(
            'spool disk',
            `${finding}: less free space than the spool may take, so a long Redis outage fills the disk first (deliveries are then refused)`,
            `free space on that disk, or lower SPOOL_MAX_BYTES below ${formatBytes(free + inUse)}`,
          )
        : ok('spool disk', finding),
    );
  } catch (err) {
    results.push(
      warn('spool disk', `free space unknown (${describe(err)})`, 'make sure the disk has room for SPOOL_MAX_BYTES'),
    );
  }

  if (status === null) {
    results.push(
      fail(
        'spool contents',
        `cannot be read: ${statusError}`,
        "give the service's user read access to SPOOL_DIR and its files",
      ),
    );
    return results;
  }
  const damaged =
    status.corruptBytes > 0 || status.badFiles.length > 0
      ? `; damaged: ${status.corruptBytes} bytes skipped, ${status.badFiles.length} unreadable files`
      : '';
  const oldest =
    status.oldestReceivedAt === null
      ? ''
      : `, oldest received ${status.oldestReceivedAt} (${formatAge(status.oldestAgeSeconds)} ago)`;
  const held = `${status.depth} deliveries (${formatBytes(status.bytes)} of ${formatBytes(maxBytes)})${oldest}${damaged}`;
  if (status.bytes >= maxBytes) {
    results.push(
      fail(
        'spool contents',
        `full: ${held}; deliveries Redis cannot take now get ENQUEUE_FAILURE_STATUS`,
        'bring Redis back so the listener drains it (or, with no listener on this SPOOL_DIR: sellsy-webhooks spool drain); raise SPOOL_MAX_BYTES if the disk allows',
      ),
    );
  } else if (status.depth > 0 || damaged !== '') {
    results.push(
      warn(
        'spool contents',
        `holds ${held}`,
        'a running listener moves them into the queue once Redis answers; with no listener on this SPOOL_DIR: sellsy-webhooks spool drain',
      ),
    );
  } else {
    results.push(ok('spool contents', 'empty'));
  }
  return results;
}

/**
 * Whether `path` is a directory one can write and fsync in: creates it when missing (then removes what it created)
 * and writes a probe file. Returns whether it existed; throws what stops it.
 */
async function probeDirectory(path: string): Promise<boolean> {
  let firstCreated: string | undefined;
  try {
    const s = await stat(path);
    if (!s.isDirectory()) throw new Error(`${path} is not a directory`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    firstCreated = await mkdir(path, { recursive: true });
  }
  const probe = join(path, `.doctor-${process.pid}-${randomBytes(4).toString('hex')}.probe`);
  try {
    const file = await open(probe, 'wx');
    try {
      await file.writeFile('sellsy-webhooks doctor probe\n');
      await file.datasync();
    } finally {
      await file.close();
    }
    await unlink(probe);
  } finally {
    if (firstCreated !== undefined) {
      // The directories created above, deepest first; rmdir never removes one that something else wrote into.
      const depth = relative(firstCreated, path).split('/').filter(Boolean).length;
      let dir = path;
      for (let i = 0; i <= depth; i++, dir = dirname(dir)) await rmdir(dir).catch(() => undefined);
    }
  }
  return firstCreated === undefined;
}

async function nearestExisting(path: string): Promise<string> {
  let dir = path;
  for (;;) {
    try {
      await stat(dir);
      return dir;
    } catch (err) {
      const parent = dirname(dir);
      if (parent === dir) throw err;
      dir = parent;
    }
  }
}

// --- built-in handlers' services ------------------------------------------------------------------------------

async function postgresCheck(postgres: NonNullable<Config['postgres']>): Promise<CheckResult[]> {
  const where = redactUrl(postgres.url, 'DATABASE_URL');
  const client = new pg.Client({
    connectionString: postgres.url,
    connectionTimeoutMillis: TIMEOUT_MS,
    query_timeout: TIMEOUT_MS,
    application_name: 'sellsy-webhooks doctor',
  });
  client.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${(TIMEOUT_MS * 2) / 1000} s`)), TIMEOUT_MS * 2);
  });
  try {
    const { version, table } = await Promise.race([
      (async () => {
        await client.connect();
        const v = await client.query<{ server_version: string }>('SHOW server_version');
        const t = await client.query<{ exists: boolean }>(
          "SELECT to_regclass(format('%I.%I', $1::text, 'sellsy_events')) IS NOT NULL AS exists",
          [postgres.schema],
        );
        return { version: v.rows[0]?.server_version ?? '?', table: t.rows[0]?.exists === true };
      })(),
      deadline,
    ]);
    const tableNote = table
      ? `table ${postgres.schema}.sellsy_events exists`
      : `table ${postgres.schema}.sellsy_events does not exist yet (the worker creates it at start)`;
    return [ok('postgres', `${where} answers (PostgreSQL ${version}); ${tableNote}`)];
  } catch (err) {
    return [
      fail(
        'postgres',
        `${where} did not answer: ${describe(err)}`,
        'check DATABASE_URL and that PostgreSQL accepts connections from here; meanwhile the postgres handler retries each job, then leaves it a dead letter',
      ),
    ];
  } finally {
    clearTimeout(timer);
    client.end().catch(() => undefined);
  }
}

/**
 * The client credentials: SellsyApi asks for a token before its first call, so one look-up (invoice 0, which does
 * not exist) shows both whether Sellsy gives a token and whether the API takes it. `calls` tells which step failed:
 * it counts API calls, and stays 0 when the token request failed.
 */
async function sellsyCheck(sellsy: NonNullable<Config['sellsyApi']>): Promise<CheckResult[]> {
  const api = new SellsyApi({ ...sellsy, timeoutMs: Math.min(sellsy.timeoutMs, HTTP_TIMEOUT_MS) });
  const credentials = 'check SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET against the API client in Sellsy';
  try {
    await api.getObject('invoice', '0');
    return [ok('sellsy api', 'client credentials accepted: a token was issued and the API answered')];
  } catch (err) {
    const message = describe(err);
    if (api.calls === 0) {
      if (err instanceof PermanentError)
        return [fail('sellsy api', message, `${credentials} (Settings › Developer portal)`)];
      if (err instanceof RetryLaterError) {
        return [warn('sellsy api', message, 'run doctor again later; the workers wait for the quota by themselves')];
      }
      return [
        warn(
          'sellsy api',
          `no token: ${message}`,
          'check SELLSY_TOKEN_URL and that this host can reach Sellsy; meanwhile sellsy-fetch jobs are retried',
        ),
      ];
    }
    const status = statusOf(err);
    if (status === 404) {
      return [ok('sellsy api', 'client credentials accepted: a token was issued and the API answered a test look-up')];
    }
    if (status === 401) {
      return [fail('sellsy api', `a token was issued, but the API refuses it: ${message}`, credentials)];
    }
    const fix =
      status === 403
        ? 'give the API client the scopes of the objects you fetch (invoices, companies…) in Sellsy'
        : 'run doctor again later; meanwhile sellsy-fetch jobs are retried';
    return [warn('sellsy api', `a token was issued, but a test look-up failed: ${message}`, fix)];
  }
}

async function forwardCheck(forward: NonNullable<Config['forward']>): Promise<CheckResult[]> {
  // Only the origin is shown: a path or query string may hold a token of the receiver.
  let target: string;
  try {
    const url = new URL(forward.url);
    target = url.pathname === '/' && url.search === '' ? url.origin : `${url.origin}/…`;
  } catch {
    target = '(FORWARD_URL)';
  }
  const timeoutMs = Math.min(forward.timeoutMs, HTTP_TIMEOUT_MS);
  const started = performance.now();
  try {
    const response = await fetch(forward.url, {
      method: 'HEAD',
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    await response.body?.cancel();
    const ms = Math.round(performance.now() - started);
    return [ok('forward url', `${target} answered HEAD with ${response.status} in ${ms} ms`)];
  } catch (err) {
    const reason = (err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : describe(err);
    return [
      warn(
        'forward url',
        `${target} unreachable: ${reason}`,
        'check FORWARD_URL and that the receiver runs and is reachable from the workers; meanwhile forward jobs are retried, then left dead letters',
      ),
    ];
  }
}

// --- helpers --------------------------------------------------------------------------------------------------

/** `version` < `minimum`, comparing major.minor.patch numerically (`7.0.15` < `7.2.0`). */
export function versionBelow(version: string, minimum: string): boolean {
  const parse = (v: string) => v.split('.').map((n) => Number.parseInt(n, 10) || 0);
  const a = parse(version);
  const b = parse(minimum);
  for (let i = 0; i < 3; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x < y;
  }
  return false;
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error && !err.message.includes(err.cause.message) ? `: ${err.cause.message}` : '';
  return oneLine(`${err.message}${cause}`, 300);
}
