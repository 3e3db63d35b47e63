/**
 * A small fake of the Sellsy API v2 for `npm run bench:backfill`: the OAuth token endpoint and
 * `POST /v2/<collection>/search` with a date-range filter (`{"filters": {"<field>": {"start", "end"}}}`), `limit`
 * and an opaque seek `offset` as query parameters, `pagination {limit, count, total, offset}`, and quota headers.
 * Benchmarks import no test code, so it is not test/helpers/fake-sellsy.ts; it answers only what a backfill asks.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type FakeObject = Record<string, unknown> & { id: number };

export interface SearchServer {
  url: string;
  apiUrl: string;
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  /** Search requests answered. */
  searches: number;
  close(): Promise<void>;
}

const MAX_LIMIT = 100;

async function bodyOf(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function answer(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, {
    'content-type': 'application/json',
    // Generous figures: the benchmark measures the backfill, not a quota wait (RECONCILE_QUOTA_SHARE applies).
    'x-quota-remaining-by-second': '1000',
    'x-quota-remaining-by-minute': '1000000',
    'x-quota-remaining-by-day': '10000000',
    'x-quota-remaining-by-month': '100000000',
  });
  res.end(JSON.stringify(body));
}

/** `collections`: objects by collection, each sorted by id; filters on any date field of them. */
export async function startSearchServer(collections: Map<string, FakeObject[]>): Promise<SearchServer> {
  const clientId = 'bench-client';
  const clientSecret = 'bench-secret';
  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const body = await bodyOf(req);
      if (req.method === 'POST' && url.pathname === '/oauth2/access-tokens') {
        return answer(res, 200, { access_token: 'bench-token', expires_in: 3600, token_type: 'Bearer' });
      }
      const m = /^\/v2\/([a-z-]+)\/search$/.exec(url.pathname);
      if (req.method !== 'POST' || m === null) return answer(res, 404, { error: { message: 'not found' } });
      if (req.headers.authorization !== 'Bearer bench-token') return answer(res, 401, { error: { message: 'token' } });
      const objects = collections.get(m[1] as string) ?? [];
      const filters = (JSON.parse(body || '{}') as { filters?: Record<string, { start?: string; end?: string }> })
        .filters;
      let matched = objects;
      for (const [field, range] of Object.entries(filters ?? {})) {
        const start = range?.start ? Date.parse(range.start) : Number.NEGATIVE_INFINITY;
        const end = range?.end ? Date.parse(range.end) : Number.POSITIVE_INFINITY;
        matched = matched.filter((o) => {
          const t = Date.parse(String(o[field]));
          return t >= start && t <= end;
        });
      }
      searches.count++;
      const limit = Math.min(MAX_LIMIT, Number(url.searchParams.get('limit') ?? MAX_LIMIT));
      // Seek paging: the offset is the last id of the previous page, opaque to the client.
      const after = url.searchParams.get('offset');
      const lastId = after === null ? 0 : Number(Buffer.from(after, 'base64url').toString('utf8'));
      const from = matched.findIndex((o) => o.id > lastId);
      const page = from === -1 ? [] : matched.slice(from, from + limit);
      const last = page.at(-1);
      answer(res, 200, {
        data: page,
        pagination: {
          limit,
          count: page.length,
          total: matched.length,
          offset: last === undefined ? null : Buffer.from(String(last.id)).toString('base64url'),
        },
      });
    })().catch((err: Error) => answer(res, 500, { error: { message: err.message } }));
  });
  const searches = { count: 0 };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    apiUrl: `${url}/v2`,
    tokenUrl: `${url}/oauth2/access-tokens`,
    clientId,
    clientSecret,
    get searches() {
      return searches.count;
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
