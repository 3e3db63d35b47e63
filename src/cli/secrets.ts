/**
 * An output writer that never lets a configured secret through: what the operator commands print goes through it
 * (defence in depth: messages from Redis, PostgreSQL or an HTTP server could echo one).
 */
import type { Config } from '../config/config.ts';

/** Every secret value of the configuration, longest first (a key that contains another is replaced whole). */
export function secretsOf(config: Config): string[] {
  const secrets = [
    ...config.signature.keys,
    ...[...config.signature.accountKeys.values()].flat(),
    config.forward?.secret,
    ...config.destinations.flatMap((d) => d.secrets),
    config.sellsyApi?.clientSecret,
    ...[...(config.sellsyFetch?.credentials.values() ?? [])].map((c) => c.clientSecret),
    config.admin?.password,
    config.admin?.token,
    config.redis.kind === 'sentinel' ? config.redis.sentinelPassword : null,
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
