/**
 * The search endpoints of the fake Sellsy: `POST /v2/<collection>/search`, as Sellsy's OpenAPI file (2.264.0)
 * describes them, over the objects a test `put` in that collection.
 *
 * - Body `{"filters": {...}}` (required). Date-range filters `{start, end}` (inclusive, ISO 8601) per collection,
 *   on the object's field of the same name: companies and individuals `updated_at`, `created`; contacts `updated`,
 *   `created`; invoices and estimates `created`, `date`. Any other filter, or a range that is not `{start?, end?}`
 *   of dates: 400, as Sellsy answers an unsupported filter.
 * - Query `limit` (default 25, 1..100, else 400), `order` (a field of the collection's `ORDERS`, default `id`),
 *   `direction` (`asc` default, `desc`), `offset`: the opaque seek token of the last object of the previous page
 *   (base64 of `[sort value, id]`), passed back unchanged; an unknown token is a 400.
 * - Answer `{data, pagination: {limit, count, total, offset}}`: `offset` names the last object returned ('' when
 *   none); `total` counts every match. The caller stops when `count < limit` or the offset is empty.
 * Quota headers, scripted failures (`failNext(n, 429, …)`) and delays are the fake's own (test/helpers/fake-sellsy.ts).
 */
import type { FakeAnswer, FakeSellsy, RouteHandler } from './fake-sellsy.ts';

/** Filters each collection supports: filter name → the object's field it ranges over. */
const FILTERS: Record<string, Record<string, string>> = {
  companies: { updated_at: 'updated_at', created: 'created' },
  individuals: { updated_at: 'updated_at', created: 'created' },
  contacts: { updated: 'updated', created: 'created' },
  invoices: { created: 'created', date: 'date' },
  estimates: { created: 'created', date: 'date' },
};

const ORDERS: Record<string, string[]> = {
  companies: ['id', 'updated_at', 'created'],
  individuals: ['id', 'updated_at', 'created'],
  contacts: ['id', 'updated', 'created'],
  invoices: ['id', 'created', 'date'],
  estimates: ['id', 'created', 'date'],
};

function badRequest(message: string): FakeAnswer {
  return { status: 400, body: { error: { code: 400, message, context: '', details: [] } } };
}

type Item = Record<string, unknown>;
type Key = [string | number, number];

/** Sort key of an object: the order field (dates compared as times), then the numeric id. */
function keyOf(item: Item, order: string): Key {
  const id = Number(item.id);
  if (order === 'id') return [id, id];
  const value = item[order];
  const time = typeof value === 'string' ? Date.parse(value) : Number.NaN;
  return [Number.isNaN(time) ? String(value ?? '') : time, id];
}

function compareKeys(a: Key, b: Key): number {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  return a[1] - b[1];
}

export function searchRoute(fake: FakeSellsy): RouteHandler {
  return ({ request, params: [collection = ''], token }) => {
    const supported = FILTERS[collection];
    if (supported === undefined) return badRequest(`no search for ${collection} in this fake`);
    const body = request.body as { filters?: unknown } | null;
    if (body === null || typeof body !== 'object' || typeof body.filters !== 'object' || body.filters === null) {
      return badRequest('filters: this value should not be blank');
    }
    const ranges: [string, number, number][] = [];
    for (const [name, range] of Object.entries(body.filters as Record<string, unknown>)) {
      const field = supported[name];
      if (field === undefined) return badRequest(`filters.${name}: this field was not expected`);
      const { start, end, ...rest } = (range ?? {}) as { start?: unknown; end?: unknown };
      const time = (v: unknown, def: number) => (v === undefined ? def : typeof v === 'string' ? Date.parse(v) : NaN);
      const from = time(start, -Infinity);
      const to = time(end, Infinity);
      if (Object.keys(rest).length > 0 || Number.isNaN(from) || Number.isNaN(to)) {
        return badRequest(`filters.${name}: a date range {start, end} is expected`);
      }
      ranges.push([field, from, to]);
    }
    const query = new URLSearchParams(request.path.split('?')[1] ?? '');
    const limit = Number(query.get('limit') ?? 25);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) return badRequest('limit: between 1 and 100');
    const order = query.get('order') ?? 'id';
    if (!ORDERS[collection]?.includes(order)) return badRequest(`order: ${order} is not a valid choice`);
    const direction = query.get('direction') ?? 'asc';
    if (direction !== 'asc' && direction !== 'desc') return badRequest('direction: asc or desc');

    const matches = (fake.objectsOf(collection, token) as Item[]).filter((item) =>
      ranges.every(([field, from, to]) => {
        const t = typeof item[field] === 'string' ? Date.parse(item[field] as string) : Number.NaN;
        return !Number.isNaN(t) && t >= from && t <= to;
      }),
    );
    const sign = direction === 'asc' ? 1 : -1;
    const sorted = matches
      .map((item) => ({ item, key: keyOf(item, order) }))
      .sort((a, b) => sign * compareKeys(a.key, b.key));
    let from = 0;
    const offset = query.get('offset');
    if (offset !== null && offset !== '') {
      let after: Key;
      try {
        after = JSON.parse(Buffer.from(offset, 'base64').toString('utf8')) as Key;
        if (!Array.isArray(after) || after.length !== 2) throw new Error('not a key');
      } catch {
        return badRequest('offset: invalid seek token');
      }
      from = sorted.findIndex((entry) => sign * compareKeys(entry.key, after) > 0);
      if (from === -1) from = sorted.length;
    }
    const page = sorted.slice(from, from + limit);
    const last = page.at(-1);
    return {
      status: 200,
      body: {
        data: page.map((entry) => entry.item),
        pagination: {
          limit,
          count: page.length,
          total: matches.length,
          offset: last === undefined ? '' : Buffer.from(JSON.stringify(last.key)).toString('base64'),
        },
      },
    };
  };
}
