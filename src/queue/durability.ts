/**
 * What the settings of a Redis server mean for the jobs it confirmed: read at start-up (the listener logs it) and
 * by `doctor`.
 */
import type { Redis } from 'ioredis';

export interface DurabilityReport {
  version: string | null;
  aofEnabled: boolean | null;
  appendfsync: string | null;
  maxmemoryPolicy: string | null;
  /** Human-readable warnings: each names a setting that can lose jobs and how to fix it. */
  warnings: string[];
  /** What a job that Redis confirmed survives, with these settings, in one sentence. */
  guarantee: string;
}

function infoField(info: string, field: string): string | null {
  const match = new RegExp(`^${field}:(.*)$`, 'm').exec(info);
  return match?.[1]?.trim() ?? null;
}

/**
 * Reads the settings that decide whether an accepted job survives: eviction policy (anything but `noeviction`
 * lets Redis delete jobs under memory pressure) and AOF (without it, a Redis restart loses recent jobs).
 * Uses INFO, which managed Redis services allow; `CONFIG GET appendfsync` is best effort.
 */
export async function inspectDurability(client: Redis, waitAof = false): Promise<DurabilityReport> {
  const info = await client.info();
  const version = infoField(info, 'redis_version') ?? infoField(info, 'valkey_version');
  const aof = infoField(info, 'aof_enabled');
  const aofEnabled = aof === null ? null : aof === '1';
  const maxmemoryPolicy = infoField(info, 'maxmemory_policy');
  let appendfsync: string | null = null;
  try {
    const reply = (await client.call('CONFIG', 'GET', 'appendfsync')) as string[];
    appendfsync = reply[1] ?? null;
  } catch {
    // CONFIG is often disabled on managed Redis; the other checks still stand.
  }
  const warnings: string[] = [];
  if (maxmemoryPolicy !== null && maxmemoryPolicy !== 'noeviction') {
    warnings.push(
      `Redis maxmemory-policy is "${maxmemoryPolicy}": under memory pressure Redis may delete queued jobs. Set maxmemory-policy noeviction.`,
    );
  }
  if (aofEnabled === false) {
    warnings.push(
      'Redis AOF is off (appendonly no): jobs accepted since the last snapshot are lost if Redis restarts. Set appendonly yes.',
    );
  } else if (aofEnabled && appendfsync === 'no') {
    warnings.push(
      'Redis appendfsync is "no": the OS decides when jobs reach the disk (up to ~30 s lost on a power loss). Use everysec or always.',
    );
  }
  return {
    version,
    aofEnabled,
    appendfsync,
    maxmemoryPolicy,
    warnings,
    guarantee: guaranteeOf(aofEnabled, appendfsync, waitAof),
  };
}

function guaranteeOf(aofEnabled: boolean | null, appendfsync: string | null, waitAof: boolean): string {
  if (waitAof)
    return "a confirmed job is on Redis's disk before the 200 (REDIS_WAIT_AOF): it survives a Redis crash and a power loss";
  if (aofEnabled === false) return 'a confirmed job survives a listener crash, but not a Redis restart (AOF off)';
  if (appendfsync === 'always') return 'a confirmed job survives a Redis crash and a power loss (appendfsync always)';
  if (appendfsync === 'everysec') {
    return 'a confirmed job survives a Redis crash; a power loss of the Redis host may lose the last second of jobs (appendfsync everysec)';
  }
  return `a confirmed job survives a Redis crash; on a power loss of the Redis host, recent jobs may be lost (appendfsync ${appendfsync ?? 'unknown'})`;
}
