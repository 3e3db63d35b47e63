/**
 * Sellsy's webhook management (API v2, `/webhooks`): the webhooks Sellsy holds, its event catalogue, and the one
 * write this service makes, pointing a webhook at an endpoint.
 *
 * `connectWebhook` is idempotent, matched by endpoint: it creates the webhook when none posts to the URL and updates
 * it when one does, so running it twice leaves one webhook. Either way it sets the sign key, JSON deliveries,
 * `is_enabled`, and the events: every event of the catalogue, or those chosen by ids and patterns (`invoice.*`).
 * Failures: an `Error` with Sellsy's answer (API refused, credentials rejected, a list that is neither shape); an
 * event outside the catalogue is a result (`unknownEvents`), checked before anything is written.
 */
import type { SellsyApi } from './api.ts';
import { matches } from './payload.ts';

/** A webhook as read from `GET /webhooks`: only the fields used, every one of them optional. */
export interface SellsyWebhook {
  id?: unknown;
  name?: unknown;
  endpoint?: unknown;
  is_enabled?: unknown;
  json_content_type?: unknown;
  configuration?: unknown;
  nb_failures?: unknown;
  last_failed?: unknown;
  last_succeeded?: unknown;
}

/** Where the listener takes deliveries: this path, or this path followed by `/<account>`. */
export const WEBHOOK_PATH = '/webhook/sellsy';
/** The `<account>` segment of a listener path. */
export const ACCOUNT_SEGMENT = /^[A-Za-z0-9_-]{1,64}$/;

const DEFAULT_WEBHOOK_NAME = 'sellsy-webhooks';
/** Pages read from a list before giving up: a list that never ends is an API fault, not thousands of webhooks. */
const MAX_PAGES = 100;

export interface WebhookSettings {
  /** The endpoint, normalised (`new URL(…).href`). */
  url: string;
  /** Event ids or patterns; null: the whole catalogue. */
  events: readonly string[] | null;
  /** null: `sellsy-webhooks` on creation, the current name on update. */
  name: string | null;
  signKey: string;
}

export type ConnectResult =
  | {
      action: 'created' | 'updated';
      /** The webhook's id, or `(no id in the answer)` when a creation answered none. */
      id: string;
      name: string;
      /** Events enabled, of `catalogueSize`. */
      enabled: number;
      catalogueSize: number;
      /** Other webhooks posting to the same endpoint, left as they are (they sign with their own keys). */
      others: string[];
    }
  /** Nothing written: these entries of `events` select no event of `catalogue`. */
  | { action: 'refused'; unknownEvents: string[]; catalogue: string[] };

/** Creates or updates the webhook posting to `settings.url`; see the header. */
export async function connectWebhook(api: SellsyApi, settings: WebhookSettings): Promise<ConnectResult> {
  const catalogue = await eventCatalogue(api);
  const { chosen, unknown } = chooseEvents(catalogue, settings.events);
  if (unknown.length > 0) return { action: 'refused', unknownEvents: unknown, catalogue };
  const existing = webhooksPostingTo(await listWebhooks(api), settings.url).filter((w) => idOf(w) !== null);
  const current = existing[0];
  const chosenSet = new Set(chosen);
  const body = {
    type: 'http',
    is_enabled: true,
    name:
      settings.name ?? (typeof current?.name === 'string' && current.name !== '' ? current.name : DEFAULT_WEBHOOK_NAME),
    endpoint: settings.url,
    sign_key: settings.signKey,
    json_content_type: true,
    // The whole catalogue, each event on or off: the result is the same whether Sellsy replaces or merges the
    // list on update, so events a previous run enabled do not linger.
    configuration: catalogue.map((id) => ({ id, is_enabled: chosenSet.has(id) })),
  };
  const others = existing.slice(1).map((w) => idOf(w) as string);
  const done = { name: body.name, enabled: chosen.length, catalogueSize: catalogue.length, others };
  if (current === undefined) {
    const created = await api.request<SellsyWebhook | null>('POST', '/webhooks', body);
    return { action: 'created', id: (created && idOf(created)) ?? '(no id in the answer)', ...done };
  }
  const id = idOf(current) as string;
  await api.request('PUT', `/webhooks/${encodeURIComponent(id)}`, body);
  return { action: 'updated', id, ...done };
}

/** Every webhook Sellsy holds, every page read. */
export function listWebhooks(api: SellsyApi): Promise<SellsyWebhook[]> {
  return listAll<SellsyWebhook>(api, '/webhooks');
}

/**
 * Whether a webhook's endpoint is one of the listener's paths (`/webhook/sellsy`, `/webhook/sellsy/<account>`, a
 * trailing slash allowed), on any host: `{ account }` (null for the bare path), else null.
 */
export function listenerPathOf(endpoint: unknown): { account: string | null } | null {
  if (typeof endpoint !== 'string' || !URL.canParse(endpoint)) return null;
  const path = new URL(endpoint).pathname.replace(/\/+$/, '');
  if (path === WEBHOOK_PATH) return { account: null };
  const account = path.startsWith(`${WEBHOOK_PATH}/`) ? path.slice(WEBHOOK_PATH.length + 1) : null;
  return account !== null && ACCOUNT_SEGMENT.test(account) ? { account } : null;
}

/** Sellsy's `nb_failures` of a webhook, 0 when absent or unreadable. */
export function failuresOf(w: SellsyWebhook): number {
  return typeof w.nb_failures === 'number' ? w.nb_failures : Number(w.nb_failures ?? 0) || 0;
}

/** Sellsy's `last_failed` of a webhook in ms since the epoch, null when absent or unreadable. */
export function lastFailedMs(w: SellsyWebhook): number | null {
  const t = typeof w.last_failed === 'string' ? Date.parse(w.last_failed) : Number.NaN;
  return Number.isNaN(t) ? null : t;
}

/** The webhooks whose endpoint is `href` (a normalised URL), in list order. */
export function webhooksPostingTo(webhooks: readonly SellsyWebhook[], href: string): SellsyWebhook[] {
  return webhooks.filter((w) => sameEndpoint(w.endpoint, href));
}

/** The ids of `GET /webhooks/events`, in catalogue order. */
export async function eventCatalogue(api: SellsyApi): Promise<string[]> {
  const entries = await listAll<unknown>(api, '/webhooks/events');
  const ids = entries
    .map((e) => (typeof e === 'string' ? e : idOf(e as { id?: unknown })))
    .filter((id): id is string => id !== null && id !== '');
  if (ids.length === 0) throw new Error('Sellsy API GET /webhooks/events answered an empty catalogue');
  return [...new Set(ids)];
}

/**
 * The catalogue ids `wanted` (ids and patterns) selects, in catalogue order: all of them when null. `unknown`: the
 * entries that select nothing.
 */
export function chooseEvents(
  catalogue: readonly string[],
  wanted: readonly string[] | null,
): { chosen: string[]; unknown: string[] } {
  if (wanted === null) return { chosen: [...catalogue], unknown: [] };
  const chosen = new Set<string>();
  const unknown: string[] = [];
  for (const entry of wanted) {
    const hits = catalogue.filter((id) => (entry.includes('*') ? matches(entry, id) : entry === id));
    if (hits.length === 0) unknown.push(entry);
    for (const id of hits) chosen.add(id);
  }
  return { chosen: catalogue.filter((id) => chosen.has(id)), unknown };
}

/**
 * Every item of a Sellsy list. Handles a bare array (the whole list) and `{data: [...], pagination: {limit, count,
 * total, offset}}`: later pages are asked with `?limit=&offset=`, a numeric offset advancing by the items read, an
 * opaque (cursor) offset in the answer being passed back as is. The first request has no query, so an endpoint
 * that does not paginate is asked nothing it may not know.
 */
export async function listAll<T>(api: Pick<SellsyApi, 'request'>, path: string): Promise<T[]> {
  const items: T[] = [];
  let query = '';
  const asked = new Set<string>();
  for (let pages = 0; pages < MAX_PAGES; pages++) {
    asked.add(query);
    const answer = await api.request<unknown>('GET', `${path}${query}`);
    if (Array.isArray(answer)) return [...items, ...(answer as T[])];
    const { data, pagination } = (answer ?? {}) as { data?: unknown; pagination?: Record<string, unknown> };
    if (!Array.isArray(data)) throw new Error(`Sellsy API GET ${path} answered neither a list nor {data: [...]}`);
    items.push(...(data as T[]));
    if (pagination === null || typeof pagination !== 'object' || data.length === 0) return items;
    const total = Number(pagination.total);
    if (Number.isFinite(total) && items.length >= total) return items;
    const limit = Number(pagination.limit) > 0 ? Number(pagination.limit) : data.length;
    if (!Number.isFinite(total) && data.length < limit) return items;
    const offset = pagination.offset;
    const next =
      typeof offset === 'string' && offset !== '' && !/^\d+$/.test(offset)
        ? offset
        : String((Number(offset) || 0) + data.length);
    query = `?limit=${limit}&offset=${encodeURIComponent(next)}`;
    if (asked.has(query)) return items;
  }
  throw new Error(`Sellsy API GET ${path}: still more pages after ${MAX_PAGES}; giving up`);
}

function sameEndpoint(endpoint: unknown, href: string): boolean {
  return typeof endpoint === 'string' && URL.canParse(endpoint.trim()) && new URL(endpoint.trim()).href === href;
}

/** A webhook's (or catalogue entry's) id as text, or null when it has none. */
export function idOf(object: { id?: unknown } | null | undefined): string | null {
  const id = object?.id;
  return typeof id === 'number' || (typeof id === 'string' && id !== '') ? String(id) : null;
}
