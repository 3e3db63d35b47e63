/**
 * `DESTINATIONS_FILE`: where the built-in `forward` sends each event when there is more than one place to send it.
 *
 * The file (YAML; JSON is YAML too):
 *   destinations:
 *     - name: accounting                      # [a-z0-9-]{1,40}, unique: metrics, logs and dead letters name it
 *       url: https://accounting.internal/hooks/sellsy
 *       secret: ${ACCOUNTING_WEBHOOK_SECRET}  # or secrets: [${NEW}, ${OLD}] during a rotation
 *       events: ["invoice.*", "payment.*"]    # handler patterns; default: every event and `unknown`
 *       timeout_ms: 10000                     # default FORWARD_TIMEOUT_MS
 *       max_per_second: 20                    # default: no limit
 *       breaker_failures: 10                  # consecutive failures that open the circuit breaker
 *       breaker_probe_seconds: 30             # while open, one probe request this often
 *       breaker_max_pause_seconds: 86400      # while open, how long a job waits before it spends attempts
 *
 * Secrets are never written in the file: a file is copied, committed and shown far more than an environment is, so
 * a value that is not exactly `${VARIABLE}` is refused, and the variable is read from the environment. Every
 * mistake is reported at start, one line per destination and field, never quoting a secret nor a query string.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { shownUrl } from '../redact.ts';
import { isPattern, matches } from '../sellsy/payload.ts';

export interface Destination {
  /** `default` for the FORWARD_URL shorthand. */
  name: string;
  url: string;
  /** One secret, or two during a rotation (the new one first): each signs the message. */
  secrets: readonly string[];
  /** Job-name patterns (`invoice.*`, `*`, `unknown`…). */
  events: readonly string[];
  timeoutMs: number;
  /** Sends at most this many requests a second from one worker process; null: no limit. */
  maxPerSecond: number | null;
  /** Consecutive failed requests (across workers) that open the circuit breaker (src/queue/destination-breaker.ts). */
  breakerFailures: number;
  /** While open, one probe request every this many seconds. */
  breakerProbeSeconds: number;
  /** While open, a job of this destination is postponed (no attempt spent) until it is this old; then it spends them. */
  breakerMaxPauseSeconds: number;
}

/** Whether a destination takes the events of this job name (its `events` patterns). */
export function takesEvent(destination: Pick<Destination, 'events'>, jobName: string): boolean {
  return destination.events.some((pattern) => matches(pattern, jobName));
}

export const DEFAULT_BREAKER_FAILURES = 10;
export const DEFAULT_BREAKER_PROBE_SECONDS = 30;
export const DEFAULT_BREAKER_MAX_PAUSE_SECONDS = 86_400;

const VARIABLE = 'DESTINATIONS_FILE';
const NAME = /^[a-z0-9-]{1,40}$/;
const REFERENCE = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;
const KEYS = new Set([
  'name',
  'url',
  'secret',
  'secrets',
  'events',
  'timeout_ms',
  'max_per_second',
  'breaker_failures',
  'breaker_probe_seconds',
  'breaker_max_pause_seconds',
]);
export const DEFAULT_EVENTS: readonly string[] = ['*', 'unknown'];
export const SECRET_HINT =
  `whsec_ followed by base64 of 24 to 64 random bytes; generate one with: ` +
  `node -e "console.log('whsec_'+crypto.randomBytes(32).toString('base64'))"`;

/** What is wrong with a Standard Webhooks secret, or null (its length only: the value is never shown). */
export function secretProblem(secret: string): string | null {
  if (!secret.startsWith('whsec_')) return `must be ${SECRET_HINT}`;
  const bytes = Buffer.from(secret.slice('whsec_'.length), 'base64');
  if (bytes.length < 24 || bytes.length > 64) return `must be ${SECRET_HINT} (got a secret of ${bytes.length} bytes)`;
  return null;
}

/** What is wrong with a destination URL, or null; the message shows the URL without query string or password. */
export function urlProblem(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'must be an absolute http:// or https:// URL';
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    return `must be an http:// or https:// URL (got ${JSON.stringify(u.protocol)})`;
  }
  if (u.username !== '' || u.password !== '') {
    return `must not hold credentials (user:password@); the receiver verifies the signature instead (got ${JSON.stringify(shownUrl(u))})`;
  }
  return null;
}

/** Reads and checks the file; every problem is pushed, prefixed with the variable and the destination. */
export function loadDestinations(
  path: string,
  env: NodeJS.ProcessEnv,
  defaultTimeoutMs: number,
  problems: string[],
): Destination[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    problems.push(`${VARIABLE}: cannot read ${JSON.stringify(path)} (${(err as NodeJS.ErrnoException).code ?? err})`);
    return [];
  }
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    // The parser's message names the line and column; it may quote the line, which holds no secret (they are refs).
    problems.push(`${VARIABLE}: ${JSON.stringify(path)} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
    return [];
  }
  const list = (doc as { destinations?: unknown } | null)?.destinations;
  if (!Array.isArray(list) || list.length === 0) {
    problems.push(
      `${VARIABLE}: ${JSON.stringify(path)} must hold "destinations:", a non-empty list of {name, url, secret} (see deploy/destinations.example.yaml)`,
    );
    return [];
  }
  const out: Destination[] = [];
  const seen = new Set<string>();
  list.forEach((entry, index) => {
    const destination = checkEntry(entry, index, env, defaultTimeoutMs, seen, problems);
    if (destination) out.push(destination);
  });
  return out;
}

function checkEntry(
  entry: unknown,
  index: number,
  env: NodeJS.ProcessEnv,
  defaultTimeoutMs: number,
  seen: Set<string>,
  problems: string[],
): Destination | null {
  const before = problems.length;
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    problems.push(`${VARIABLE}: destination ${index + 1} must be a mapping with name, url and secret`);
    return null;
  }
  const e = entry as Record<string, unknown>;
  const name = typeof e.name === 'string' && NAME.test(e.name) ? e.name : null;
  const label = `${VARIABLE}: destination ${index + 1}${name ? ` (${name})` : ''}`;
  const problem = (text: string) => problems.push(`${label}: ${text}`);
  for (const key of Object.keys(e)) {
    if (!KEYS.has(key)) problem(`unknown field ${JSON.stringify(key)} (fields: ${[...KEYS].join(', ')})`);
  }
  if (name === null) {
    problem('"name" must be 1 to 40 characters among a-z, 0-9 and "-" (it names the destination in metrics and logs)');
  } else if (seen.has(name)) {
    problem(`"name" ${JSON.stringify(name)} is used by an earlier destination; names must be unique`);
  } else {
    seen.add(name);
  }

  const url = typeof e.url === 'string' ? e.url : null;
  const urlIssue = url === null ? 'must be an absolute http:// or https:// URL' : urlProblem(url);
  if (urlIssue) problem(`"url" ${urlIssue}`);

  const secrets = checkSecrets(e, env, problem);

  let events: string[] = [...DEFAULT_EVENTS];
  if (e.events !== undefined) {
    const list = typeof e.events === 'string' ? [e.events] : e.events;
    if (!Array.isArray(list) || list.length === 0 || !list.every((p) => typeof p === 'string' && isPattern(p))) {
      problem(
        '"events" must be a non-empty list of patterns such as "invoice.*", "*.deleted", "invoice.step", "*" or "unknown"',
      );
    } else {
      events = [...new Set(list as string[])];
    }
  }
  const timeoutMs = integer(e.timeout_ms, 1, 600_000, '"timeout_ms"', problem) ?? defaultTimeoutMs;
  const maxPerSecond = integer(e.max_per_second, 1, 100_000, '"max_per_second"', problem);
  const breakerFailures =
    integer(e.breaker_failures, 1, 1_000_000, '"breaker_failures"', problem) ?? DEFAULT_BREAKER_FAILURES;
  const breakerProbeSeconds =
    integer(e.breaker_probe_seconds, 1, 86_400, '"breaker_probe_seconds"', problem) ?? DEFAULT_BREAKER_PROBE_SECONDS;
  const breakerMaxPauseSeconds =
    integer(e.breaker_max_pause_seconds, 0, 2_592_000, '"breaker_max_pause_seconds"', problem) ??
    DEFAULT_BREAKER_MAX_PAUSE_SECONDS;
  if (problems.length > before || name === null || url === null) return null;
  return {
    name,
    url,
    secrets,
    events,
    timeoutMs,
    maxPerSecond,
    breakerFailures,
    breakerProbeSeconds,
    breakerMaxPauseSeconds,
  };
}

/** `secret: ${VAR}` or `secrets: [${NEW}, ${OLD}]`, each read from the environment and checked. */
function checkSecrets(e: Record<string, unknown>, env: NodeJS.ProcessEnv, problem: (text: string) => void): string[] {
  if ((e.secret === undefined) === (e.secrets === undefined)) {
    problem('set "secret" (or "secrets" with two during a rotation), and only one of them');
    return [];
  }
  const field = e.secret !== undefined ? 'secret' : 'secrets';
  const refs = e.secret !== undefined ? [e.secret] : e.secrets;
  if (!Array.isArray(refs) || refs.length === 0 || refs.length > 2) {
    problem(`"secrets" must list one or two references such as ["\${NEW_SECRET}", "\${OLD_SECRET}"]`);
    return [];
  }
  const out: string[] = [];
  for (const ref of refs) {
    const variable = typeof ref === 'string' ? REFERENCE.exec(ref.trim())?.[1] : undefined;
    if (variable === undefined) {
      // Never quoted: it may be the secret itself.
      problem(
        `"${field}" must be a reference to an environment variable such as \${ACCOUNTING_WEBHOOK_SECRET}; a literal ` +
          'secret in the file is refused (files are copied and committed; keep the secret in the environment)',
      );
      continue;
    }
    const value = env[variable];
    if (value === undefined || value === '') {
      problem(`"${field}" names the environment variable ${variable}, which is not set`);
      continue;
    }
    const issue = secretProblem(value);
    if (issue) problem(`the environment variable ${variable} ${issue}`);
    else out.push(value);
  }
  return out;
}

function integer(
  value: unknown,
  min: number,
  max: number,
  field: string,
  problem: (text: string) => void,
): number | null {
  if (value === undefined) return null;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    problem(`${field} must be a whole number from ${min} to ${max} (got ${JSON.stringify(value)})`);
    return null;
  }
  return value;
}
