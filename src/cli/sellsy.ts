/**
 * `sellsy-webhooks sellsy connect --url URL [--events LIST] [--name NAME] [--sign-key KEY]`: points a Sellsy webhook
 * at this service (src/sellsy/webhooks.ts `connectWebhook`: created or updated, matched by endpoint), with a fresh
 * `sign_key` unless `--sign-key`, and every event of Sellsy's catalogue unless `--events` names some (ids or patterns
 * such as `invoice.*`). It prints the key for `SELLSY_SIGN_KEY`.
 *
 * `sellsy-webhooks sellsy status [--url URL]`: Sellsy's view of its webhooks (or of the one posting to URL):
 * enabled, content type, events, failure counters, with a warning line for each thing that loses deliveries, and,
 * when Sellsy reports failed deliveries, the `backfill --since` command that queues what they lost. Never prints a
 * sign key.
 *
 * Needs `SELLSY_CLIENT_ID`/`SELLSY_CLIENT_SECRET` (an API client allowed to manage webhooks).
 * Exit codes: 0 done, 1 Sellsy API failure (or, for status, no webhook posts to --url), 2 usage error (arguments,
 * an event outside the catalogue), 78 no Sellsy API credentials.
 */
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/config.ts';
import { SellsyApi } from '../sellsy/api.ts';
import { isPattern } from '../sellsy/payload.ts';
import {
  ACCOUNT_SEGMENT,
  connectWebhook,
  failuresOf,
  idOf,
  lastFailedMs,
  listenerPathOf,
  listWebhooks,
  type SellsyWebhook,
  WEBHOOK_PATH,
  webhooksPostingTo,
} from '../sellsy/webhooks.ts';
import { parseFlags } from './flags.ts';

export const CONNECT_USAGE =
  'Usage: sellsy-webhooks sellsy connect --url https://HOST/webhook/sellsy[/ACCOUNT] [--events client.created,invoice.*] [--name NAME] [--sign-key KEY]';
export const STATUS_USAGE = 'Usage: sellsy-webhooks sellsy status [--url https://HOST/webhook/sellsy[/ACCOUNT]]';

export const EXIT_OK = 0;
export const EXIT_API_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_CONFIG = 78;

/** A line of output; `out` gets the report, `err` the failures (both stdout in tests). */
export type Print = (line: string) => void;

export interface ConnectArgs {
  /** The endpoint, normalised (`new URL(…).href`). */
  url: string;
  /** Event ids or patterns; null: the whole catalogue. */
  events: string[] | null;
  /** null: `sellsy-webhooks` on creation, the current name on update. */
  name: string | null;
  /** The sign key to set; null: a fresh random one. Given, it lets an operator deploy it (beside the old key)
   * before Sellsy signs with it, so that no delivery is refused during a rotation. */
  signKey: string | null;
}

/** Bytes of randomness in a generated sign key (43 base64url characters). */
const SIGN_KEY_BYTES = 32;
/** Catalogue ids shown when an event is unknown. */
const SHOWN_EVENTS = 8;

/** Parses `sellsy connect` arguments; a string is a usage error to print. */
export function parseConnectArgs(args: string[]): ConnectArgs | string {
  const values = parseFlags(
    args,
    { url: { type: 'string' }, events: { type: 'string' }, name: { type: 'string' }, 'sign-key': { type: 'string' } },
    CONNECT_USAGE,
  );
  if (typeof values === 'string') return values;
  if (values.url === undefined) return `--url is required\n${CONNECT_USAGE}`;
  const url = checkEndpoint(values.url);
  if (!url.ok) return url.problem;
  let events: string[] | null = null;
  if (values.events !== undefined) {
    events = [...new Set(values.events.split(',').map((e) => e.trim()))].filter((e) => e !== '');
    if (events.length === 0) return `--events is empty: give event ids or patterns, e.g. client.created,invoice.*`;
    const bad = events.find((e) => !isPattern(e) || e === 'unknown');
    if (bad !== undefined) {
      return `--events: ${JSON.stringify(bad)} is neither an event id nor a pattern (use "invoice.step", "invoice.*", "*.deleted" or "*")`;
    }
  }
  let name: string | null = null;
  if (values.name !== undefined) {
    name = values.name.trim();
    if (name === '') return `--name is empty\n${CONNECT_USAGE}`;
  }
  const signKey = values['sign-key'] ?? null;
  if (signKey !== null && !/^[\x21-\x7e]{16,}$/.test(signKey)) {
    return '--sign-key must be at least 16 printable characters without spaces (e.g. openssl rand -base64 32)';
  }
  return { url: url.href, events, name, signKey };
}

/** Parses `sellsy status` arguments; a string is a usage error to print. */
export function parseStatusArgs(args: string[]): { url: string | null } | string {
  const values = parseFlags(args, { url: { type: 'string' } }, STATUS_USAGE);
  if (typeof values === 'string') return values;
  if (values.url === undefined) return { url: null };
  // Any URL: status also has to show a webhook that `connect` would refuse to create.
  if (!URL.canParse(values.url)) return `--url ${JSON.stringify(values.url)} is not a URL\n${STATUS_USAGE}`;
  return { url: new URL(values.url).href };
}

/**
 * Whether `raw` is an endpoint this service listens on: https (http only on a loopback host, for tests), no
 * credentials, query or fragment, and the path `/webhook/sellsy` or `/webhook/sellsy/<account>`.
 */
function checkEndpoint(raw: string): { ok: true; href: string } | { ok: false; problem: string } {
  const fail = (why: string) => ({ ok: false as const, problem: `--url ${JSON.stringify(raw)} ${why}` });
  if (!URL.canParse(raw)) return fail(`is not a URL (expected https://HOST${WEBHOOK_PATH})`);
  const url = new URL(raw);
  if (url.protocol === 'http:' && !isLoopback(url.hostname)) {
    return fail('is not https: Sellsy would send the signed deliveries in clear (http is allowed for localhost only)');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return fail('must be an https URL');
  if (url.username !== '' || url.password !== '') return fail('must not hold credentials (user:password@)');
  if (url.search !== '' || url.hash !== '') return fail('must not have a query string or a fragment');
  const path = url.pathname;
  const account = path.startsWith(`${WEBHOOK_PATH}/`) ? path.slice(WEBHOOK_PATH.length + 1) : null;
  if (path !== WEBHOOK_PATH && (account === null || !ACCOUNT_SEGMENT.test(account))) {
    return fail(
      `must end with the path ${WEBHOOK_PATH} or ${WEBHOOK_PATH}/<account> (letters, digits, - and _): that is ` +
        `where the listener takes deliveries (got path ${JSON.stringify(path)})`,
    );
  }
  return { ok: true, href: url.href };
}

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/**
 * `sellsy connect`: creates or updates the webhook posting to `parsed.url` (arguments checked by `parseConnectArgs`);
 * see the header for exit codes.
 */
export async function sellsyConnect(
  config: Config,
  parsed: ConnectArgs,
  out: Print,
  err: Print = out,
): Promise<number> {
  const api = apiOf(config, 'sellsy connect', err);
  if (api === null) return EXIT_CONFIG;
  try {
    const signKey = parsed.signKey ?? randomBytes(SIGN_KEY_BYTES).toString('base64url');
    const result = await connectWebhook(api, { ...parsed, signKey });
    if (result.action === 'refused') {
      err(`sellsy connect: ${unknownEventsProblem(result.unknownEvents, result.catalogue)}`);
      return EXIT_USAGE;
    }
    const { action, id } = result;
    out(
      `${action} webhook ${id} ${JSON.stringify(result.name)} → ${parsed.url}: ${result.enabled} of ${result.catalogueSize} events, JSON, enabled`,
    );
    for (const other of result.others) {
      out(
        `warning: webhook ${other} also posts to ${parsed.url} and still signs with its old key: delete it in ` +
          'Sellsy, or its deliveries will be refused',
      );
    }
    // The one place a sign key is printed: Sellsy holds it and signs every delivery with it, and the listener needs
    // the same key to check them. It is generated here, so this is the only moment the operator can copy it.
    out('Set the new sign key where the listener (and a worker with SIGNATURE_CHECK=worker) reads it:');
    out(`SELLSY_SIGN_KEY=${signKey}`);
    const account = listenerPathOf(parsed.url)?.account ?? null;
    if (account !== null) {
      out(
        `This endpoint names account ${account}: if SELLSY_ACCOUNT_KEYS has an entry for ${JSON.stringify(account)}, ` +
          'put the key there instead (an account with its own keys ignores SELLSY_SIGN_KEY).',
      );
    }
    if (action === 'updated') {
      out(
        'Sellsy now signs with this key only: deliveries signed with the old key (retries, or sent before the switch) ' +
          'are refused unless the listener holds both during the switch, SELLSY_SIGN_KEY=<new key>,<old key>; ' +
          'drop the old key once nb_failures stops growing (sellsy-webhooks sellsy status). Without any refusal: ' +
          'deploy SELLSY_SIGN_KEY=<key>,<old key> first, then run connect with --sign-key <key>.',
      );
    }
    return EXIT_OK;
  } catch (error) {
    err(`sellsy connect: ${(error as Error).message}`);
    return EXIT_API_FAILURE;
  }
}

/**
 * `sellsy status`: Sellsy's view of its webhooks, or of the one posting to `url` (arguments checked by
 * `parseStatusArgs`).
 */
export async function sellsyStatus(
  config: Config,
  { url }: { url: string | null },
  out: Print,
  err: Print = out,
): Promise<number> {
  const api = apiOf(config, 'sellsy status', err);
  if (api === null) return EXIT_CONFIG;
  let webhooks: SellsyWebhook[];
  try {
    webhooks = await listWebhooks(api);
  } catch (error) {
    err(`sellsy status: ${(error as Error).message}`);
    return EXIT_API_FAILURE;
  }
  if (url !== null) {
    webhooks = webhooksPostingTo(webhooks, url);
    if (webhooks.length === 0) {
      err(
        `sellsy status: no Sellsy webhook posts to ${url}; create it with: sellsy-webhooks sellsy connect --url ${url}`,
      );
      return EXIT_API_FAILURE;
    }
  } else if (webhooks.length === 0) {
    out(
      'no Sellsy webhook is configured; create one with: sellsy-webhooks sellsy connect --url https://HOST/webhook/sellsy',
    );
    return EXIT_OK;
  }
  for (const webhook of webhooks) for (const line of describeWebhook(webhook)) out(line);
  const since = backfillSince(webhooks, config.reconcile.overlapSeconds);
  if (since !== null) {
    // Sellsy documents no retry: a failed delivery is lost. The command reads the objects changed since then and
    // queues what no webhook brought (docs/reconciliation.md); it is safe to run twice.
    out('Sellsy reports failed deliveries; queue the changes they lost with:');
    out(`sellsy-webhooks backfill --since ${since}`);
  }
  return EXIT_OK;
}

/** The status lines of one webhook, warnings last. Built field by field: `sign_key` is never read. */
function describeWebhook(w: SellsyWebhook): string[] {
  const id = idOf(w) ?? '?';
  const events = enabledEvents(w.configuration);
  const failures = failuresOf(w);
  const lines = [
    `webhook ${id}`,
    `  name               ${text(w.name)}`,
    `  endpoint           ${text(w.endpoint)}`,
    `  enabled            ${yesNo(w.is_enabled)}`,
    `  json_content_type  ${yesNo(w.json_content_type)}`,
    `  events             ${events === null ? '-' : events}`,
    `  nb_failures        ${failures}`,
    `  last_failed        ${text(w.last_failed)}`,
    `  last_succeeded     ${text(w.last_succeeded)}`,
  ];
  if (w.is_enabled !== true) {
    lines.push(`warning: webhook ${id} is disabled: Sellsy sends it nothing (sellsy connect enables it again)`);
  }
  if (failures > 0) {
    lines.push(
      `warning: webhook ${id} has ${failures} failed deliveries (last at ${text(w.last_failed)}): check that the ` +
        'endpoint answers 200 and that SELLSY_SIGN_KEY holds the key Sellsy signs with (the listener logs refusals)',
    );
  }
  if (w.json_content_type !== true) {
    lines.push(
      `warning: webhook ${id} posts form-encoded deliveries, not JSON: sellsy connect switches it to JSON ` +
        '(form deliveries depend on SIGNATURE_FORM_SCOPE to verify)',
    );
  }
  if (events === 0) lines.push(`warning: webhook ${id} is subscribed to no event`);
  return lines;
}

/**
 * The `--since` of the backfill that covers the failures of `webhooks`: the earliest `last_failed` of a webhook with
 * failures, minus `overlapSeconds` (RECONCILE_OVERLAP_SECONDS: a change stamped a little before its delivery failed
 * is covered too), as ISO 8601 UTC. Null when no webhook reports a failure. A count without a readable time gives
 * `24h`: Sellsy failed at some point and a day is the backfill's cheap default.
 */
export function backfillSince(webhooks: readonly SellsyWebhook[], overlapSeconds: number): string | null {
  let earliest: number | null = null;
  let undated = false;
  for (const w of webhooks) {
    if (failuresOf(w) <= 0) continue;
    const t = lastFailedMs(w);
    if (t === null) undated = true;
    else earliest = earliest === null ? t : Math.min(earliest, t);
  }
  if (earliest !== null) return new Date(earliest - overlapSeconds * 1000).toISOString();
  return undated ? '24h' : null;
}

function apiOf(config: Config, command: string, err: Print): SellsyApi | null {
  if (config.sellsyApi === null) {
    err(
      `${command}: no Sellsy API credentials: set SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET ` +
        '(a Sellsy API client allowed to manage webhooks)',
    );
    return null;
  }
  return new SellsyApi(config.sellsyApi);
}

/** Why `--events` selects nothing Sellsy has, with a few valid ids. */
function unknownEventsProblem(unknown: readonly string[], catalogue: readonly string[]): string {
  const shown = catalogue.slice(0, SHOWN_EVENTS).join(', ');
  const more = catalogue.length > SHOWN_EVENTS ? `, … (${catalogue.length} in all)` : '';
  return `--events: ${unknown.map((e) => JSON.stringify(e)).join(', ')} ${unknown.length === 1 ? 'is' : 'are'} not in Sellsy's event catalogue; valid ids include ${shown}${more}`;
}

/** Enabled entries of a `configuration` list; null when there is no list. */
function enabledEvents(configuration: unknown): number | null {
  if (!Array.isArray(configuration)) return null;
  return configuration.filter((c) => (c as { is_enabled?: unknown })?.is_enabled !== false).length;
}

function yesNo(value: unknown): string {
  return value === true ? 'yes' : value === false ? 'no' : '-';
}

/** A field as text: control characters escaped (it comes from the API), '-' when absent. */
function text(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-';
  const s = typeof value === 'string' ? value : JSON.stringify(value);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: escaping them is the point
  return s.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
