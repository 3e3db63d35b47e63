/**
 * One Sellsy search read to its end: `POST /v2/<collection>/search?limit=100[&offset=<token>]` with `{"filters"}`,
 * page after page, each page handed over as it comes.
 *
 * Paging: Sellsy's seek `offset` names the last object of a page; it is passed back unchanged. The search ends when a
 * page holds fewer than `limit` objects, or comes without an offset (or with the same one again).
 * Rate limits: the client's (src/sellsy/api.ts) waits before a call when the second's quota is spent; a 429 it turns
 * into `RetryLaterError` with the wait Sellsy's headers ask for, and the same page is asked again after that wait.
 * Every other error ends the search (a 400: the filter is not supported).
 * Quota share: with `quota`, each call first waits until the minute's share allows it (src/reconcile/quota.ts).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { RetryLaterError } from '../errors.ts';
import type { SellsyApi } from '../sellsy/api.ts';
import type { QuotaShare } from './quota.ts';

/** Sellsy's largest page. */
const PAGE_LIMIT = 100;
/** 429s in a row on one page before the search gives up (a quota that does not come back). */
const MAX_RATE_LIMITED = 30;

export type SellsyObject = Record<string, unknown>;

interface SearchAnswer {
  data?: unknown;
  pagination?: { limit?: unknown; count?: unknown; total?: unknown; offset?: unknown };
}

export interface SearchOptions {
  filters: Record<string, unknown>;
  signal?: AbortSignal;
  /** Called before waiting out a 429, with the wait. */
  onRateLimited?: (delayMs: number) => void;
  /** The share of the minute's quota the search may spend (src/reconcile/quota.ts); none: no cap. */
  quota?: QuotaShare;
}

export async function* searchPages(
  api: SellsyApi,
  collection: string,
  options: SearchOptions,
): AsyncGenerator<{ objects: SellsyObject[] }> {
  let offset: string | null = null;
  for (;;) {
    const query = new URLSearchParams({ limit: String(PAGE_LIMIT) });
    if (offset !== null) query.set('offset', offset);
    const answer = await withRateLimitWaits(async () => {
      await options.quota?.take(options.signal);
      try {
        return await api.request<SearchAnswer>(
          'POST',
          `/${collection}/search?${query}`,
          { filters: options.filters },
          options.signal ? { signal: options.signal } : {},
        );
      } finally {
        options.quota?.observe();
      }
    }, options);
    const objects = Array.isArray(answer?.data) ? (answer.data as SellsyObject[]) : [];
    yield { objects };
    const next = answer?.pagination?.offset;
    const nextOffset = typeof next === 'string' || typeof next === 'number' ? String(next) : '';
    if (objects.length < PAGE_LIMIT || nextOffset === '' || nextOffset === offset) return;
    offset = nextOffset;
  }
}

async function withRateLimitWaits<T>(call: () => Promise<T>, options: SearchOptions): Promise<T> {
  for (let limited = 0; ; limited++) {
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof RetryLaterError) || limited >= MAX_RATE_LIMITED) throw err;
      options.onRateLimited?.(err.delayMs);
      await sleep(err.delayMs, undefined, options.signal ? { signal: options.signal } : undefined);
    }
  }
}
