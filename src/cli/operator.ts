/**
 * What the operator commands (`doctor`, `stats`) share: a Redis connection that fails fast instead of waiting for
 * Redis forever, addresses shown with their password masked, and an output writer that never lets a configured
 * secret through (defence in depth: messages from Redis, PostgreSQL or an HTTP server could echo one).
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import type { Config } from '../config/config.ts';
import { recordQueueName } from '../queue/records.ts';
import { redactUrl } from '../redact.ts';

/**
 * Connects with a deadline covering the TCP connection and Redis's first answer (a Redis that accepts the connection
 * but never answers, frozen or overloaded, is reported too), and no reconnection: a command sent after the
 * connection is lost fails at once. Throws an Error naming the masked address.
 */
export async function connectOrFail(config: Config, name: string, timeoutMs = 3000): Promise<Redis> {
  const client = new Redis(config.redisUrl, {
    connectionName: `${config.queueName}:${name}`,
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: 10_000,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
  });
  // connect() itself rejects with "Connection is closed."; the cause (ECONNREFUSED, WRONGPASS…) is in the events.
  let lastError: Error | null = null;
  client.on('error', (err: Error) => {
    lastError = err;
  });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    await Promise.race([client.connect(), deadline]);
    return client;
  } catch (err) {
    client.disconnect();
    const reason = ((lastError as Error | null) ?? (err as Error)).message.replace(/\.$/, '');
    throw new Error(`Redis at ${redactUrl(config.redisUrl, 'REDIS_URL')} did not answer: ${reason}`, { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

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
