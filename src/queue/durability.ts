/**
 * What the settings of a Redis server mean for the jobs it confirmed: the one place that judges them.
 *
 * `inspectDurability` reads the settings (INFO, which managed Redis services allow; `CONFIG GET appendfsync` is best
 * effort) and returns them with findings: one about eviction (`maxmemory-policy`: anything but `noeviction` lets
 * Redis delete jobs under memory pressure), one about AOF (`appendonly`, `appendfsync`: without AOF a Redis restart
 * loses recent jobs). The listener logs the findings at each connection; `doctor` prints them as its
 * `redis eviction` and `redis aof` checks. `durabilityFindings` and `guaranteeOf` are pure: they judge settings
 * however they were read.
 */
import { addressOf, masterNodes, type RedisClient } from './connection.ts';

/** The settings that decide whether a confirmed job survives, as the listener logs them (null: not shown). */
export interface DurabilitySettings {
  /** `redis_version`, or `valkey_version` on a server that shows only that. */
  version: string | null;
  aofEnabled: boolean | null;
  appendfsync: string | null;
  maxmemoryPolicy: string | null;
}

/** `ok`, `warn` (a risk, or a setting that cannot be read), `fail` (jobs are lost in ordinary operation). */
export type FindingLevel = 'ok' | 'warn' | 'fail';

export type DurabilityCode =
  | 'noeviction'
  | 'eviction'
  | 'eviction-unknown'
  | 'appendfsync-always'
  | 'appendfsync-everysec'
  | 'appendfsync-no'
  | 'appendfsync-unknown'
  | 'aof-off'
  | 'aof-unknown';

export interface DurabilityFinding {
  level: FindingLevel;
  /** Stable: tests and log queries match on it. */
  code: DurabilityCode;
  /** `eviction` (maxmemory-policy) or `aof` (appendonly and appendfsync). */
  subject: 'eviction' | 'aof';
  /** The settings the finding rests on. */
  figures: Partial<DurabilitySettings>;
  /** The setting and what it means for queued jobs (doctor's finding). */
  message: string;
  /** What to do; not for `ok`. */
  fix?: string;
  /**
   * The warning the listener logs when it connects: setting, risk and fix in one sentence. Only for settings that
   * put confirmed jobs at risk; a setting that cannot be read is doctor's business, not a warning at each start.
   */
  warning?: string;
}

export interface DurabilityReport {
  settings: DurabilitySettings;
  /** `valkey_version` (Valkey also shows the `redis_version` it is compatible with). */
  valkeyVersion: string | null;
  /** Eviction first, then AOF. */
  findings: DurabilityFinding[];
  /** What a job that Redis confirmed survives, with these settings, in one sentence. */
  guarantee: string;
  /** On a Cluster: the master these settings are of (`host:port`), the worst of all. */
  node?: string;
}

/** The `field:value` lines of an INFO reply, by field; section headers (`# Server`) and blank lines are skipped. */
export function parseInfo(info: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of info.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0 || line.startsWith('#')) continue;
    fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

const SEVERITY: Record<FindingLevel, number> = { ok: 0, warn: 1, fail: 2 };

/** The replicas an INFO reply shows connected and in sync (`slave<n>:…,state=online,…`). */
export function onlineReplicas(info: Map<string, string>): number {
  return [...info.entries()].filter(([field, value]) => /^slave\d+$/.test(field) && /state=online/.test(value)).length;
}

/**
 * Reads the settings and judges them; `waitAof` is REDIS_WAIT_AOF, which changes the guarantee. On a Cluster, every
 * master is read (INFO would go to one node at random) and the report of the worst one is returned, named by `node`.
 */
export async function inspectDurability(client: RedisClient, waitAof = false): Promise<DurabilityReport> {
  const nodes = masterNodes(client);
  if (nodes.length === 1 && nodes[0] === client) return inspectNode(client, waitAof);
  const reports = await Promise.all(
    nodes.map(async (node) => ({ ...(await inspectNode(node, waitAof)), node: addressOf(node) })),
  );
  const worst = (r: DurabilityReport) => Math.max(...r.findings.map((f) => SEVERITY[f.level]));
  const sorted = reports.sort((a, b) => worst(b) - worst(a));
  if (sorted[0] === undefined) throw new Error('the Cluster has no master connected');
  return sorted[0];
}

/** The settings of one server. */
export async function inspectNode(client: RedisClient, waitAof = false): Promise<DurabilityReport> {
  const info = parseInfo(await client.info());
  const aof = info.get('aof_enabled');
  let appendfsync: string | null = null;
  try {
    const reply = (await client.call('CONFIG', 'GET', 'appendfsync')) as string[];
    appendfsync = reply[1] ?? null;
  } catch {
    // CONFIG is often disabled on managed Redis; the other checks still stand.
  }
  const settings: DurabilitySettings = {
    version: info.get('redis_version') ?? info.get('valkey_version') ?? null,
    aofEnabled: aof === undefined ? null : aof === '1',
    appendfsync,
    maxmemoryPolicy: info.get('maxmemory_policy') ?? null,
  };
  return {
    settings,
    valkeyVersion: info.get('valkey_version') ?? null,
    findings: durabilityFindings(settings),
    guarantee: guaranteeOf(settings, waitAof),
  };
}

export function durabilityFindings(settings: DurabilitySettings): DurabilityFinding[] {
  return [evictionFinding(settings.maxmemoryPolicy), aofFinding(settings.aofEnabled, settings.appendfsync)];
}

function evictionFinding(maxmemoryPolicy: string | null): DurabilityFinding {
  const about = { subject: 'eviction', figures: { maxmemoryPolicy } } as const;
  if (maxmemoryPolicy === null) {
    return {
      ...about,
      level: 'warn',
      code: 'eviction-unknown',
      message: 'maxmemory-policy unknown (INFO does not show it)',
      fix: 'make sure it is noeviction: any other policy lets Redis delete queued jobs under memory pressure',
    };
  }
  if (maxmemoryPolicy !== 'noeviction') {
    return {
      ...about,
      level: 'fail',
      code: 'eviction',
      message: `maxmemory-policy ${maxmemoryPolicy}: when memory runs short Redis silently deletes keys, queued jobs included`,
      fix: 'set maxmemory-policy noeviction (redis-cli CONFIG SET maxmemory-policy noeviction, and in redis.conf; on a managed Redis, in its parameters)',
      warning: `Redis maxmemory-policy is "${maxmemoryPolicy}": under memory pressure Redis may delete queued jobs. Set maxmemory-policy noeviction.`,
    };
  }
  return {
    ...about,
    level: 'ok',
    code: 'noeviction',
    message:
      'maxmemory-policy noeviction: a full Redis refuses writes (the listener then spools) instead of deleting jobs',
  };
}

function aofFinding(aofEnabled: boolean | null, appendfsync: string | null): DurabilityFinding {
  if (aofEnabled === null) {
    return {
      subject: 'aof',
      figures: { aofEnabled },
      level: 'warn',
      code: 'aof-unknown',
      message: 'unknown (INFO does not show aof_enabled)',
      fix: 'make sure appendonly is yes: without it a Redis restart loses the jobs accepted since the last snapshot',
    };
  }
  if (!aofEnabled) {
    return {
      subject: 'aof',
      figures: { aofEnabled },
      level: 'warn',
      code: 'aof-off',
      message: 'appendonly no: a Redis restart loses the jobs accepted since the last snapshot',
      fix: 'set appendonly yes with appendfsync everysec (redis-cli CONFIG SET appendonly yes, and in redis.conf)',
      warning:
        'Redis AOF is off (appendonly no): jobs accepted since the last snapshot are lost if Redis restarts. Set appendonly yes.',
    };
  }
  const about = { subject: 'aof', figures: { aofEnabled, appendfsync } } as const;
  if (appendfsync === 'no') {
    return {
      ...about,
      level: 'warn',
      code: 'appendfsync-no',
      message:
        'appendonly yes, appendfsync no: the OS decides when jobs reach the disk (about 30 s may be lost on a power loss)',
      fix: 'set appendfsync everysec (or always)',
      warning:
        'Redis appendfsync is "no": the OS decides when jobs reach the disk (up to ~30 s lost on a power loss). Use everysec or always.',
    };
  }
  if (appendfsync === 'always') {
    return {
      ...about,
      level: 'ok',
      code: 'appendfsync-always',
      message: 'appendonly yes, appendfsync always: every job is on disk before Redis confirms it',
    };
  }
  if (appendfsync === 'everysec') {
    return {
      ...about,
      level: 'ok',
      code: 'appendfsync-everysec',
      message:
        'appendonly yes, appendfsync everysec: a Redis crash loses nothing, a power loss of its host at most the last second',
    };
  }
  return {
    ...about,
    level: 'ok',
    code: 'appendfsync-unknown',
    message: 'appendonly yes (appendfsync unknown: CONFIG GET is not allowed)',
  };
}

/** What a confirmed job survives; `waitAof` (REDIS_WAIT_AOF) makes the listener wait for the fsync before its 200. */
export function guaranteeOf(
  settings: Pick<DurabilitySettings, 'aofEnabled' | 'appendfsync'>,
  waitAof: boolean,
): string {
  const { aofEnabled, appendfsync } = settings;
  if (waitAof)
    return "a confirmed job is on Redis's disk before the 200 (REDIS_WAIT_AOF): it survives a Redis crash and a power loss";
  if (aofEnabled === false) return 'a confirmed job survives a listener crash, but not a Redis restart (AOF off)';
  if (appendfsync === 'always') return 'a confirmed job survives a Redis crash and a power loss (appendfsync always)';
  if (appendfsync === 'everysec') {
    return 'a confirmed job survives a Redis crash; a power loss of the Redis host may lose the last second of jobs (appendfsync everysec)';
  }
  return `a confirmed job survives a Redis crash; on a power loss of the Redis host, recent jobs may be lost (appendfsync ${appendfsync ?? 'unknown'})`;
}
