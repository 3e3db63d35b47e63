/**
 * What the operator commands (`doctor`, `stats`) share: an output writer that never lets a configured
 * secret through (defence in depth: messages from Redis, PostgreSQL or an HTTP server could echo one).
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import type { Config } from '../config/config.ts';
import { recordQueueName } from '../queue/records.ts';

/** Every secret value of the configuration, longest first (a key that contains another is replaced whole). */
export function secretsOf(config: Config): string[] {
  const secrets = [
    ...config.signature.keys,
    ...[...config.signature.accountKeys.values()].flat(),
    config.forward?.secret,
    config.sellsyApi?.clientSecret,
    ...[...(config.sellsyFetch?.credentials.values() ?? [])].map((c) => c.clientSecret),
    config.admin?.password,
    config.admin?.token,
    ...passwordsOf(config.redisUrl),
    ...(config.postgres ? passwordsOf(config.postgres.url) : []),
  ];
  // Very short values would blank ordinary words; the commands never print a secret anyway.
  return [...new Set(secrets.filter((s): s is string => typeof s === 'string' && s.length >= 6))].sort(
    (a, b) => b.length - a.length,
  );
}

/** `out`, with every configured secret replaced by `***`. */
export function scrubbing(config: Config, out: (line: string) => void): (line: string) => void {
  const secrets = secretsOf(config);
  return (line) => {
    let text = line;
    for (const secret of secrets) text = text.replaceAll(secret, '***');
    out(text);
  };
}

/** The password of a URL as written (percent-encoded) and decoded. */
function passwordsOf(url: string): string[] {
  try {
    const password = new URL(url).password;
    return password === '' ? [] : [password, decodeURIComponent(password)];
  } catch {
    return [];
  }
}

/** `42 s`, `7 min`, `3.5 h`, `2.1 d`. */
export function formatAge(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} d`;
}

/** `0.00 MiB`, `12.3 GiB`. */
export function formatBytes(bytes: number): string {
  const GiB = 1024 ** 3;
  if (bytes >= GiB) return `${(bytes / GiB).toFixed(1)} GiB`;
  return `${(bytes / 1024 ** 2).toFixed(2)} MiB`;
}

/** Whether the record queue (`RECORD_ORDER=latest`) is in use: configured so, or it has keys in Redis. */
export async function recordQueueInUse(config: Config, client: Redis): Promise<boolean> {
  if (config.worker.recordOrder === 'latest') return true;
  const base = `${config.queuePrefix}:${recordQueueName(config.queueName)}`;
  const keys = ['meta', 'events', 'wait', 'active', 'delayed', 'prioritized', 'completed', 'failed'];
  return (await client.exists(...keys.map((k) => `${base}:${k}`))) > 0;
}

/** A message on one line (a failed reason may hold a stack or a multi-line body), cut to `max` characters. */
export function oneLine(text: string, max = 160): string {
  const line = text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
  return line.length <= max ? line : `${line.slice(0, max - 1)}…`;
}

type FlagOptions = NonNullable<ParseArgsConfig['options']>;
type Flags<O extends FlagOptions> = ReturnType<
  typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>
>['values'];

/**
 * An operator command's flags (node:util `parseArgs`: strict, no positional arguments): their values, or the
 * usage error to print (parseArgs' message, then `usage`).
 */
export function parseFlags<const O extends FlagOptions>(args: string[], options: O, usage: string): Flags<O> | string {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    return `${(err as Error).message}\n${usage}`;
  }
}
