/**
 * Where Redis is, from `REDIS_URL` and `REDIS_SENTINELS` or `REDIS_CLUSTER_NODES`: the topology, each impossible
 * combination named as a configuration problem.
 */
import type { Env } from './schema.ts';
import { shown } from './shown.ts';

/** A `host:port` of a Sentinel or a Cluster seed node. */
export interface RedisAddress {
  host: string;
  port: number;
}

/**
 * Where Redis is. The data nodes' credentials, database and TLS always come from `REDIS_URL`; with Sentinel or
 * Cluster its host and port are unused.
 */
export type RedisTopology =
  | { kind: 'standalone'; url: string }
  | {
      kind: 'sentinel';
      url: string;
      sentinels: readonly RedisAddress[];
      /** `REDIS_SENTINEL_MASTER`. */
      masterName: string;
      /** Credentials and TLS of the Sentinels themselves (the data nodes' are in `url`). */
      sentinelUsername: string | null;
      sentinelPassword: string | null;
      sentinelTls: boolean;
    }
  | { kind: 'cluster'; url: string; nodes: readonly RedisAddress[] };

/**
 * `REDIS_URL` with `REDIS_SENTINELS` or `REDIS_CLUSTER_NODES`: the topology, or null with its problems added.
 */
export function parseRedisTopology(parsed: Env, problems: string[]): RedisTopology | null {
  const before = problems.length;
  let url: URL | null = null;
  try {
    url = new URL(parsed.REDIS_URL);
  } catch {
    problems.push(
      `REDIS_URL: must be a URL such as redis://127.0.0.1:6379 (got ${shown('REDIS_URL', parsed.REDIS_URL)})`,
    );
  }
  const sentinelOnly = (['REDIS_SENTINEL_USERNAME', 'REDIS_SENTINEL_PASSWORD'] as const).filter(
    (name) => parsed[name] !== undefined,
  );
  if (parsed.REDIS_SENTINELS !== undefined && parsed.REDIS_CLUSTER_NODES !== undefined) {
    problems.push('REDIS_SENTINELS and REDIS_CLUSTER_NODES: set one or the other (Sentinel or Cluster), not both');
  }
  if (parsed.REDIS_SENTINELS === undefined && sentinelOnly.length > 0) {
    problems.push(`${sentinelOnly.join(', ')}: only used with REDIS_SENTINELS, which is not set`);
  }
  const database = url?.pathname.replace(/^\//, '') ?? '';
  if (parsed.REDIS_CLUSTER_NODES !== undefined && database !== '') {
    problems.push(
      `REDIS_URL: a Redis Cluster has only database 0; remove the database number (got ${shown('REDIS_URL', parsed.REDIS_URL)})`,
    );
  }
  const sentinels =
    parsed.REDIS_SENTINELS !== undefined ? parseAddresses('REDIS_SENTINELS', parsed.REDIS_SENTINELS, problems) : [];
  const nodes =
    parsed.REDIS_CLUSTER_NODES !== undefined
      ? parseAddresses('REDIS_CLUSTER_NODES', parsed.REDIS_CLUSTER_NODES, problems)
      : [];
  if (problems.length > before) return null;
  if (parsed.REDIS_SENTINELS !== undefined) {
    return {
      kind: 'sentinel',
      url: parsed.REDIS_URL,
      sentinels,
      masterName: parsed.REDIS_SENTINEL_MASTER,
      sentinelUsername: parsed.REDIS_SENTINEL_USERNAME ?? null,
      sentinelPassword: parsed.REDIS_SENTINEL_PASSWORD ?? null,
      sentinelTls: parsed.REDIS_SENTINEL_TLS,
    };
  }
  if (parsed.REDIS_CLUSTER_NODES !== undefined) return { kind: 'cluster', url: parsed.REDIS_URL, nodes };
  return { kind: 'standalone', url: parsed.REDIS_URL };
}

/** A comma-separated list of `host:port` (an IPv6 host in brackets: `[::1]:26379`). */
function parseAddresses(name: string, value: string, problems: string[]): RedisAddress[] {
  const addresses: RedisAddress[] = [];
  const items = value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
  for (const item of items) {
    const match = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(item);
    const port = match ? Number(match[3]) : 0;
    if (!match || port < 1 || port > 65535) {
      problems.push(`${name}: ${JSON.stringify(item)} is not host:port (a list such as 10.0.0.1:26379,10.0.0.2:26379)`);
      continue;
    }
    addresses.push({ host: match[1] ?? match[2] ?? '', port });
  }
  if (items.length === 0) problems.push(`${name}: names no host:port (a list such as 10.0.0.1:26379,10.0.0.2:26379)`);
  return addresses;
}

/** Redis Cluster hashes only the part of a key between its first `{` and the next `}`, when that is not empty. */
export function hasHashTag(key: string): boolean {
  return /^[^{]*\{[^}]+\}/.test(key);
}
