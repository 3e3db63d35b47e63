/**
 * A fake Sellsy (token endpoint and API v2) on a real loopback socket, port 0: what tests use instead of Sellsy.
 *
 * - `POST /oauth2/access-tokens`: JSON `{grant_type: 'client_credentials', client_id, client_secret}` checked against
 *   `clientId`/`clientSecret`; answers tokens `tok-1`, `tok-2`… valid `expiresIn` seconds.
 * - `addAccount(clientId, clientSecret)`: another Sellsy account, with its own credentials and objects (ids are per
 *   account): a token of those credentials reads that account's objects only.
 * - `GET /v2/<collection>/<id>`: the object `put` there, or a 404 in Sellsy's error shape. Bearer token required: 401
 *   for a missing, unknown or expired token (`expireTokens()` expires every token given so far).
 * - `failNext(n, status, headers?)`: the next n API calls (paths under `/v2`) answer that status instead;
 *   `delayNext(n, ms)`: the next n API calls answer after `ms`.
 * - every answer carries `X-Quota-Remaining-By-*` headers from `quota` (scripted headers override them).
 * - `requests`: every request received, in order.
 * - webhooks management, in memory: `GET|POST /v2/webhooks`, `GET|PUT|DELETE /v2/webhooks/<id>`,
 *   `GET /v2/webhooks/events` (the catalogue `webhookEvents`). Lists answer `{data, pagination: {limit, count, total,
 *   offset}}` honouring `?limit=&offset=` (default limit `webhookPageSize`), or a bare array when `webhookListShape`
 *   is `'array'`. POST and PUT answer 400 on a read-only field (`id`, `nb_failures`, `last_failed`,
 *   `last_succeeded`), an unknown field, a `type` other than `http` or a `configuration` id outside the catalogue:
 *   stricter than needed, so a client that echoes what it read is caught. Stored webhooks, sign keys included:
 *   `webhooks()`; `putWebhook()` stores one as Sellsy would hold it (failures and all), `clearWebhooks()` empties.
 * - `POST /v2/<collection>/search`: filters, seek paging and order over the objects `put` there
 *   (test/helpers/fake-sellsy-search.ts).
 * More endpoints: `route(method, pattern, handler)`; routes added later are tried first.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { SellsyApiOptions } from '../../src/sellsy/api.ts';
import { searchRoute } from './fake-sellsy-search.ts';

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

/** A webhook as the fake stores it (and answers it: `sign_key` included, as the worst case for a client). */
export interface FakeWebhook {
  id: number;
  type: string;
  is_enabled: boolean;
  name: string;
  endpoint: string;
  sign_key: string;
  json_content_type: boolean;
  object_in_payload: boolean;
  configuration: { id: string; is_enabled: boolean }[];
  nb_failures: number;
  last_failed: string | null;
  last_succeeded: string | null;
}

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
  /** Another account, reached with these credentials; `put` stores its objects. */
  addAccount(clientId: string, clientSecret: string): { put(collection: string, id: string, object: unknown): void };
  remove(collection: string, id: string): void;
  /** The objects of a collection, of the account a token was given to (the main account for any other token). */
  objectsOf(collection: string, token: string | null): unknown[];
  failNext(n: number, status: number, headers?: Record<string, string>, body?: unknown): void;
  delayNext(n: number, ms: number): void;
  expireTokens(): void;
  /** The catalogue `GET /v2/webhooks/events` answers (`{id, label}` each). */
  webhookEvents: string[];
  /** Default `limit` of `GET /v2/webhooks` (default 25). */
  webhookPageSize: number;
  /** `paginated` (default): `{data, pagination}`; `array`: every webhook in a bare array. */
  webhookListShape: 'paginated' | 'array';
  /** Copies of the stored webhooks, by id. */
  webhooks(): FakeWebhook[];
  /** Stores a webhook (merged over the one with that id, if any; a new id when none is given); returns a copy. */
  putWebhook(fields: Partial<FakeWebhook>): FakeWebhook;
  clearWebhooks(): void;
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
const DEFAULT_WEBHOOK_EVENTS = [
  'client.created',
  'client.updated',
  'client.deleted',
  'prospect.created',
  'invoice.created',
  'invoice.updated',
  'invoice.step',
  'estimate.created',
  'estimate.updated',
];
const WEBHOOK_WRITABLE = new Set([
  'type',
  'is_enabled',
  'name',
  'endpoint',
  'sign_key',
  'json_content_type',
  'object_in_payload',
  'configuration',
]);
const WEBHOOK_READ_ONLY = new Set(['id', 'nb_failures', 'last_failed', 'last_succeeded']);

/** Sellsy's error shape: `{"error":{"code","message","context","details"}}`. */
/** The options of a `SellsyApi` that talks to `fake`. */
export function fakeApiOptions(fake: FakeSellsy, timeoutMs = 5000): SellsyApiOptions {
  return {
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    apiUrl: fake.apiUrl,
    tokenUrl: fake.tokenUrl,
    timeoutMs,
  };
}

/** Between tests of webhook management: no webhook stored, lists in their default shape, requests forgotten. */
export function resetWebhooks(fake: FakeSellsy): void {
  fake.requests.length = 0;
  fake.clearWebhooks();
  fake.webhookPageSize = 25;
  fake.webhookListShape = 'paginated';
}

export function sellsyError(status: number, message: string, headers?: Record<string, string>): FakeAnswer {
  return { status, body: { error: { code: status, message, context: '', details: [] } }, ...(headers && { headers }) };
}

export async function startFakeSellsy(
  options: { clientId?: string; clientSecret?: string; expiresIn?: number } = {},
): Promise<FakeSellsy> {
  const objects = new Map<string, Map<string, unknown>>();
  /** The other accounts: client id → secret and objects; token → the account it was given to. */
  const accounts = new Map<string, { secret: string; objects: Map<string, Map<string, unknown>> }>();
  const tokenAccount = new Map<string, string>();
  const store = (into: Map<string, Map<string, unknown>>, collection: string, id: string, object: unknown) => {
    const map = into.get(collection) ?? new Map<string, unknown>();
    into.set(collection, map);
    map.set(id, object);
  };
  /** Token → Date.now() after which it is refused. */
  const tokens = new Map<string, number>();
  const failures: FakeAnswer[] = [];
  const delays: number[] = [];
  const routes: Route[] = [];
  const webhooks = new Map<number, FakeWebhook>();
  let webhookCount = 0;
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
      store(objects, collection, id, object);
    },
    addAccount(clientId, clientSecret) {
      const account = { secret: clientSecret, objects: new Map<string, Map<string, unknown>>() };
      accounts.set(clientId, account);
      return { put: (collection, id, object) => store(account.objects, collection, id, object) };
    },
    remove(collection, id) {
      objects.get(collection)?.delete(id);
    },
    objectsOf(collection, token) {
      const account = token === null ? undefined : tokenAccount.get(token);
      const from = account === undefined ? objects : (accounts.get(account)?.objects ?? objects);
      return [...(from.get(collection)?.values() ?? [])];
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
    webhookEvents: [...DEFAULT_WEBHOOK_EVENTS],
    webhookPageSize: 25,
    webhookListShape: 'paginated',
    webhooks: () => [...webhooks.values()].sort((a, b) => a.id - b.id).map((w) => structuredClone(w)),
    putWebhook(fields) {
      const id = fields.id ?? ++webhookCount;
      webhookCount = Math.max(webhookCount, id);
      const stored: FakeWebhook = {
        ...(webhooks.get(id) ?? newWebhook(id)),
        ...structuredClone(fields),
        id,
      };
      webhooks.set(id, stored);
      return structuredClone(stored);
    },
    clearWebhooks() {
      webhooks.clear();
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
      const other = typeof body.client_id === 'string' ? accounts.get(body.client_id) : undefined;
      const known =
        (body.client_id === fake.clientId && body.client_secret === fake.clientSecret) ||
        (other !== undefined && body.client_secret === other.secret);
      if (!known) {
        return { status: 401, body: { error: 'invalid_client', error_description: 'Client authentication failed' } };
      }
      const token = `tok-${++tokenCount}`;
      if (other !== undefined) tokenAccount.set(token, body.client_id as string);
      tokens.set(token, Date.now() + fake.expiresIn * 1000);
      return { status: 200, body: { token_type: 'Bearer', expires_in: fake.expiresIn, access_token: token } };
    },
    { auth: false },
  );
  fake.route('GET', /^\/v2\/([a-z-]+)\/([^/?]+)$/, ({ params: [collection = '', id = ''], token }) => {
    const account = token === null ? undefined : tokenAccount.get(token);
    const from = account === undefined ? objects : (accounts.get(account)?.objects ?? objects);
    const object = from.get(collection)?.get(decodeURIComponent(id));
    return object === undefined ? sellsyError(404, `${collection} ${id} not found`) : { status: 200, body: object };
  });

  fake.route('POST', /^\/v2\/([a-z-]+)\/search$/, searchRoute(fake));

  // Webhooks management. Added after the generic look-up above, so these are tried first for `/v2/webhooks/…`.
  fake.route('GET', /^\/v2\/webhooks$/, ({ request }) => {
    const all = fake.webhooks();
    if (fake.webhookListShape === 'array') return { status: 200, body: all };
    return { status: 200, body: page(all, request.path, fake.webhookPageSize) };
  });
  fake.route('POST', /^\/v2\/webhooks$/, ({ request }) => {
    const problem = webhookProblem(request.body, true);
    if (problem !== null) return sellsyError(400, problem);
    return { status: 201, body: fake.putWebhook({ ...(request.body as Partial<FakeWebhook>), id: ++webhookCount }) };
  });
  fake.route('GET', /^\/v2\/webhooks\/events$/, ({ request }) => ({
    status: 200,
    body: page(
      fake.webhookEvents.map((id) => ({ id, label: id })),
      request.path,
      Math.max(1, fake.webhookEvents.length),
    ),
  }));
  fake.route('GET', /^\/v2\/webhooks\/(\d+)$/, ({ params: [id = ''] }) => {
    const webhook = webhooks.get(Number(id));
    return webhook === undefined ? sellsyError(404, `webhook ${id} not found`) : { status: 200, body: webhook };
  });
  fake.route('PUT', /^\/v2\/webhooks\/(\d+)$/, ({ request, params: [id = ''] }) => {
    if (!webhooks.has(Number(id))) return sellsyError(404, `webhook ${id} not found`);
    const problem = webhookProblem(request.body, false);
    if (problem !== null) return sellsyError(400, problem);
    return { status: 200, body: fake.putWebhook({ ...(request.body as Partial<FakeWebhook>), id: Number(id) }) };
  });
  fake.route('DELETE', /^\/v2\/webhooks\/(\d+)$/, ({ params: [id = ''] }) => {
    if (!webhooks.delete(Number(id))) return sellsyError(404, `webhook ${id} not found`);
    return { status: 204 };
  });

  function newWebhook(id: number): FakeWebhook {
    return {
      id,
      type: 'http',
      is_enabled: true,
      name: '',
      endpoint: '',
      sign_key: '',
      json_content_type: false,
      object_in_payload: false,
      configuration: [],
      nb_failures: 0,
      last_failed: null,
      last_succeeded: null,
    };
  }

  /** Why a POST/PUT body is refused, or null. */
  function webhookProblem(body: unknown, creating: boolean): string | null {
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return 'the body must be a JSON object';
    const fields = body as Record<string, unknown>;
    for (const key of Object.keys(fields)) {
      if (WEBHOOK_READ_ONLY.has(key)) return `${key} is read-only`;
      if (!WEBHOOK_WRITABLE.has(key)) return `unknown field ${key}`;
    }
    if (creating && (fields.type === undefined || fields.endpoint === undefined))
      return 'type and endpoint are required';
    if (fields.type !== undefined && fields.type !== 'http') return 'type must be "http"';
    if (fields.endpoint !== undefined) {
      if (typeof fields.endpoint !== 'string' || !URL.canParse(fields.endpoint)) return 'endpoint must be a URL';
    }
    if (fields.configuration !== undefined) {
      if (!Array.isArray(fields.configuration)) return 'configuration must be a list';
      for (const entry of fields.configuration as { id?: unknown; is_enabled?: unknown }[]) {
        if (typeof entry?.id !== 'string' || !fake.webhookEvents.includes(entry.id)) {
          return `configuration: unknown event ${JSON.stringify(entry?.id)}`;
        }
        if (typeof entry.is_enabled !== 'boolean') return `configuration: ${entry.id} needs is_enabled`;
      }
    }
    return null;
  }

  /** Sellsy's list shape for `items`, cut by the request's `limit` and `offset`. */
  function page(items: unknown[], path: string, defaultLimit: number) {
    const query = new URLSearchParams(path.split('?')[1] ?? '');
    const limit = Number(query.get('limit') ?? defaultLimit) || defaultLimit;
    const offset = Number(query.get('offset') ?? 0) || 0;
    const data = items.slice(offset, offset + limit);
    return { data, pagination: { limit, count: data.length, total: items.length, offset } };
  }

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
