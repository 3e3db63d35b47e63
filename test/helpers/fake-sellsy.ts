/**
 * A fake Sellsy (token endpoint and API v2) on a real loopback socket, port 0: what tests use instead of Sellsy.
 *
 * - `POST /oauth2/access-tokens`: JSON `{grant_type: 'client_credentials', client_id, client_secret}` checked against
 *   `clientId`/`clientSecret`; answers tokens `tok-1`, `tok-2`… valid `expiresIn` seconds.
 * - `GET /v2/<collection>/<id>`: the object `put` there, or a 404 in Sellsy's error shape. Bearer token required: 401
 *   for a missing, unknown or expired token (`expireTokens()` expires every token given so far).
 * - `failNext(n, status, headers?)`: the next n API calls (paths under `/v2`) answer that status instead;
 *   `delayNext(n, ms)`: the next n API calls answer after `ms`.
 * - every answer carries `X-Quota-Remaining-By-*` headers from `quota` (scripted headers override them).
 * - `requests`: every request received, in order.
 * More endpoints: `route(method, pattern, handler)`; routes added later are tried first.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface FakeRequest {
  method: string;
  /** Path and query, e.g. `/v2/invoices/42`. */
  path: string;
  authorization: string | null;
  /** Parsed JSON body, else the raw text ('' when empty). */
  body: unknown;
  /** Date.now() when the request arrived. */
  at: number;
}

export interface FakeAnswer {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export interface RouteContext {
  request: FakeRequest;
  /** The pattern's capture groups. */
  params: string[];
  /** The valid Bearer token of the call (routes with `auth`), else null. */
  token: string | null;
}

export type RouteHandler = (context: RouteContext) => FakeAnswer | Promise<FakeAnswer>;

export interface FakeQuota {
  bySecond: number;
  byMinute: number;
  byDay: number;
  byMonth: number;
}

export interface FakeSellsy {
  /** `http://127.0.0.1:<port>`. */
  url: string;
  /** `<url>/v2`. */
  apiUrl: string;
  /** `<url>/oauth2/access-tokens`. */
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  /** Lifetime of the tokens given from now on, in seconds (default 3600). */
  expiresIn: number;
  quota: FakeQuota;
  readonly requests: FakeRequest[];
  /** Requests received on the token endpoint. */
  tokenRequests(): FakeRequest[];
  /** Requests received under `/v2`. */
  apiRequests(): FakeRequest[];
  put(collection: string, id: string, object: unknown): void;
  remove(collection: string, id: string): void;
  failNext(n: number, status: number, headers?: Record<string, string>, body?: unknown): void;
  delayNext(n: number, ms: number): void;
  expireTokens(): void;
  route(method: string, pattern: RegExp, handler: RouteHandler, options?: { auth?: boolean }): void;
  close(): Promise<void>;
}

interface Route {
  method: string;
  pattern: RegExp;
  handler: RouteHandler;
  auth: boolean;
}

const TOKEN_PATH = '/oauth2/access-tokens';

/** Sellsy's error shape: `{"error":{"code","message","context","details"}}`. */
export function sellsyError(status: number, message: string, headers?: Record<string, string>): FakeAnswer {
  return { status, body: { error: { code: status, message, context: '', details: [] } }, ...(headers && { headers }) };
}

export async function startFakeSellsy(
  options: { clientId?: string; clientSecret?: string; expiresIn?: number } = {},
): Promise<FakeSellsy> {
  const objects = new Map<string, Map<string, unknown>>();
  /** Token → Date.now() after which it is refused. */
  const tokens = new Map<string, number>();
  const failures: FakeAnswer[] = [];
  const delays: number[] = [];
  const routes: Route[] = [];
  let tokenCount = 0;
  /** Ends the delayed answers still waiting when the fake closes. */
  const closing = new AbortController();

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, { status: 500, body: { error: { code: 500, message: String(err) } } });
    });
  });

  const fake: FakeSellsy = {
    url: '',
    apiUrl: '',
    tokenUrl: '',
    clientId: options.clientId ?? 'client-id',
    clientSecret: options.clientSecret ?? 'client-secret',
    expiresIn: options.expiresIn ?? 3600,
    quota: { bySecond: 10, byMinute: 600, byDay: 100_000, byMonth: 1_000_000 },
    requests: [],
    tokenRequests: () => fake.requests.filter((r) => r.path === TOKEN_PATH),
    apiRequests: () => fake.requests.filter((r) => r.path.startsWith('/v2/')),
    put(collection, id, object) {
      const map = objects.get(collection) ?? new Map<string, unknown>();
      objects.set(collection, map);
      map.set(id, object);
    },
    remove(collection, id) {
      objects.get(collection)?.delete(id);
    },
    failNext(n, status, headers, body) {
      for (let i = 0; i < n; i++) {
        failures.push(
          body === undefined
            ? sellsyError(status, `scripted ${status}`, headers)
            : { status, body, ...(headers && { headers }) },
        );
      }
    },
    delayNext(n, ms) {
      for (let i = 0; i < n; i++) delays.push(ms);
    },
    expireTokens() {
      for (const token of tokens.keys()) tokens.set(token, 0);
    },
    route(method, pattern, handler, routeOptions = {}) {
      routes.unshift({ method: method.toUpperCase(), pattern, handler, auth: routeOptions.auth ?? true });
    },
    async close() {
      closing.abort();
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };

  fake.route(
    'POST',
    /^\/oauth2\/access-tokens$/,
    ({ request }) => {
      const body = request.body as Record<string, unknown> | null;
      if (body === null || typeof body !== 'object' || body.grant_type !== 'client_credentials') {
        return { status: 400, body: { error: 'unsupported_grant_type', error_description: 'grant_type is invalid' } };
      }
      if (body.client_id !== fake.clientId || body.client_secret !== fake.clientSecret) {
        return { status: 401, body: { error: 'invalid_client', error_description: 'Client authentication failed' } };
      }
      const token = `tok-${++tokenCount}`;
      tokens.set(token, Date.now() + fake.expiresIn * 1000);
      return { status: 200, body: { token_type: 'Bearer', expires_in: fake.expiresIn, access_token: token } };
    },
    { auth: false },
  );
  fake.route('GET', /^\/v2\/([a-z-]+)\/([^/?]+)$/, ({ params: [collection = '', id = ''] }) => {
    const object = objects.get(collection)?.get(decodeURIComponent(id));
    return object === undefined ? sellsyError(404, `${collection} ${id} not found`) : { status: 200, body: object };
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown = text;
    try {
      if (text !== '') body = JSON.parse(text);
    } catch {}
    const path = req.url ?? '/';
    const request: FakeRequest = {
      method: req.method ?? 'GET',
      path,
      authorization: req.headers.authorization ?? null,
      body,
      at: Date.now(),
    };
    fake.requests.push(request);
    const pathOnly = path.split('?')[0] ?? path;
    const isApi = pathOnly.startsWith('/v2/');
    if (isApi) {
      const delay = delays.shift();
      if (delay !== undefined) await sleep(delay, undefined, { signal: closing.signal });
      const failure = failures.shift();
      if (failure !== undefined) return send(res, failure);
    }
    const match = findRoute(request.method, pathOnly);
    if (match === null) return send(res, sellsyError(404, `no route for ${request.method} ${pathOnly}`));
    const [route, params] = match;
    let token: string | null = null;
    if (route.auth) {
      token = /^Bearer (\S+)$/.exec(request.authorization ?? '')?.[1] ?? null;
      const expiresAt = token === null ? undefined : tokens.get(token);
      if (expiresAt === undefined || Date.now() >= expiresAt) {
        return send(res, sellsyError(401, 'The access token is invalid or has expired'));
      }
    }
    send(res, await route.handler({ request, params, token }));
  }

  function findRoute(method: string, path: string): [Route, string[]] | null {
    for (const route of routes) {
      if (route.method !== method) continue;
      const m = route.pattern.exec(path);
      if (m) return [route, m.slice(1)];
    }
    return null;
  }

  function send(res: ServerResponse, answer: FakeAnswer): void {
    const headers: Record<string, string> = {
      'x-quota-remaining-by-second': String(fake.quota.bySecond),
      'x-quota-remaining-by-minute': String(fake.quota.byMinute),
      'x-quota-remaining-by-day': String(fake.quota.byDay),
      'x-quota-remaining-by-month': String(fake.quota.byMonth),
    };
    for (const [name, value] of Object.entries(answer.headers ?? {})) headers[name.toLowerCase()] = value;
    if (answer.body === undefined) {
      res.writeHead(answer.status, headers).end();
      return;
    }
    headers['content-type'] = 'application/json';
    res.writeHead(answer.status, headers).end(JSON.stringify(answer.body));
  }

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  fake.url = `http://127.0.0.1:${port}`;
  fake.apiUrl = `${fake.url}/v2`;
  fake.tokenUrl = `${fake.url}${TOKEN_PATH}`;
  return fake;
}
