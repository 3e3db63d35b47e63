/**
 * The Sellsy API v2 client: an OAuth2 client-credentials token, kept and shared, and JSON calls under `apiUrl`.
 *
 * Inputs: `{clientId, clientSecret, apiUrl, tokenUrl, timeoutMs}` (`config.sellsyApi`) and a clock (tests inject one).
 * Outputs: parsed JSON bodies; `quota` holds the latest `X-Quota-Remaining-*` figures, `calls`, `rateLimited` and
 * `tokenRequests` count for metrics.
 * Failures, as the worker reads them (the two errors in `src/errors.ts`, their meaning in `src/handlers/handler.ts`):
 * - `RetryLaterError(ms)`: 429; the delay comes from `Retry-After`, else from the exhausted quota window;
 * - `PermanentError`: any other 4xx (400, 402 plan limit, 403 missing scope, 404…), a 401 that a fresh token does not
 *   cure, a token endpoint that refuses the credentials: retrying cannot help;
 * - `Error`: 5xx, network errors, timeouts, invalid JSON: retried with backoff.
 * The client secret and the tokens never appear in a message (they are scrubbed, should Sellsy ever echo them).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { PermanentError, RetryLaterError } from '../errors.ts';

export interface SellsyApiOptions {
  clientId: string;
  clientSecret: string;
  /** Base URL without a trailing slash, e.g. `https://api.sellsy.com/v2`. */
  apiUrl: string;
  /** `https://login.sellsy.com/oauth2/access-tokens`. */
  tokenUrl: string;
  /** Per HTTP request (token requests included). */
  timeoutMs: number;
}

export interface SellsyQuota {
  bySecond: number | null;
  byMinute: number | null;
  byDay: number | null;
  byMonth: number | null;
  /** Clock time of the response the figures came from; null before any response carried them. */
  at: number | null;
}

export interface RequestOptions {
  /** Aborts the call (the worker's shutdown signal); combined with the `timeoutMs` timeout. */
  signal?: AbortSignal;
}

/** Sellsy's collection for each webhook `relatedtype` that has a look-up by id. */
const COLLECTIONS: ReadonlyMap<string, string> = new Map([
  ['invoice', 'invoices'],
  ['estimate', 'estimates'],
  ['order', 'orders'],
  ['creditnote', 'credit-notes'],
  ['credit-note', 'credit-notes'],
  ['delivery', 'deliveries'],
  ['client', 'companies'],
  ['prospect', 'companies'],
  ['supplier', 'companies'],
  ['third', 'companies'],
  ['company', 'companies'],
  ['individual', 'individuals'],
  ['people', 'contacts'],
  ['contact', 'contacts'],
  ['opportunity', 'opportunities'],
  ['task', 'tasks'],
  ['item', 'items'],
  ['payment', 'payments'],
]);

/** Ids come from webhook bodies, which may be unsigned: nothing that could climb out of the collection (`..`). */
const SAFE_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** The Sellsy collection of a related type (`invoice` → `invoices`), or null when it has no look-up by id. */
export function collectionOf(relatedType: string): string | null {
  return COLLECTIONS.get(relatedType.toLowerCase()) ?? null;
}

/**
 * The error of a failed answer: permanent for a 4xx (the same request would fail again), retried for a 5xx. It
 * carries the HTTP status (`statusOf`) for callers that tell answers apart.
 */
function answerError(status: number, message: string): Error {
  return Object.assign(status < 500 ? new PermanentError(message) : new Error(message), { status });
}

/** The HTTP status Sellsy answered, on an error of this client; null for any other failure (network, timeout…). */
export function statusOf(err: unknown): number | null {
  const status = (err as { status?: unknown } | null)?.status;
  return typeof status === 'number' ? status : null;
}

/** The API path of an object (`/invoices/42`); null for a type without a look-up or an id unsafe in a path. */
export function objectPath(relatedType: string, id: string): string | null {
  const collection = collectionOf(relatedType);
  if (collection === null || !SAFE_ID.test(id)) return null;
  return `/${collection}/${id}`;
}

/** Refresh this long before the token expires, so a call never goes out with a token about to lapse. */
const REFRESH_MARGIN_MS = 60_000;
const QUOTA_HEADERS = [
  ['bySecond', 'x-quota-remaining-by-second'],
  ['byMinute', 'x-quota-remaining-by-minute'],
  ['byDay', 'x-quota-remaining-by-day'],
  ['byMonth', 'x-quota-remaining-by-month'],
] as const;
/** Longest part of Sellsy's error message kept in ours: job failure reasons stay readable. */
const MAX_DETAIL = 300;

interface Token {
  value: string;
  /** Clock time from which the token is refreshed before use. */
  refreshAt: number;
}

export class SellsyApi {
  /** Latest quota figures Sellsy sent. */
  quota: SellsyQuota = { bySecond: null, byMinute: null, byDay: null, byMonth: null, at: null };
  /** API calls sent (each retry after a 401 counts). */
  calls = 0;
  /** 429 answers received. */
  rateLimited = 0;
  /** Token requests sent. */
  tokenRequests = 0;

  readonly #options: SellsyApiOptions;
  readonly #now: () => number;
  #token: Token | null = null;
  /** The token request in flight: concurrent callers wait on it instead of sending their own. */
  #tokenPending: Promise<Token> | null = null;

  constructor(options: SellsyApiOptions, now: () => number = Date.now) {
    this.#options = { ...options, apiUrl: options.apiUrl.replace(/\/+$/, '') };
    this.#now = now;
  }

  /** The full object behind a webhook's `relatedtype`/`relatedid`. */
  async getObject(relatedType: string, id: string, options: RequestOptions = {}): Promise<unknown> {
    const path = objectPath(relatedType, id);
    if (path === null) {
      throw new PermanentError(
        collectionOf(relatedType) === null
          ? `Sellsy API: no look-up for related type ${JSON.stringify(relatedType)}`
          : `Sellsy API: related id ${JSON.stringify(id.slice(0, 80))} is not a valid id`,
      );
    }
    return this.request('GET', path, undefined, options);
  }

  /** One API call, `path` relative to `apiUrl` (`/invoices/42`); the parsed JSON answer (null when empty). */
  async request<T = unknown>(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<T> {
    const token = await this.#getToken(options.signal);
    const response = await this.#call(method, path, body, token.value, options.signal);
    if (response.status !== 401) return this.#read<T>(method, path, response);
    await response.body?.cancel();
    // The token expired or was revoked early: drop it (unless a concurrent caller already replaced it), retry once.
    if (this.#token?.value === token.value) this.#token = null;
    const fresh = await this.#getToken(options.signal);
    const again = await this.#call(method, path, body, fresh.value, options.signal);
    if (again.status === 401) {
      const detail = await this.#errorDetail(again);
      throw new PermanentError(
        `Sellsy API ${method} ${path} answered 401 with a fresh token${detail}: check the API client's credentials and access`,
      );
    }
    return this.#read<T>(method, path, again);
  }

  async #call(
    method: string,
    path: string,
    body: unknown,
    token: string,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    await this.#slowDown(signal);
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    this.calls++;
    const response = await this.#fetch(`${method} ${path}`, `${this.#options.apiUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: this.#signal(signal),
    });
    this.#readQuota(response.headers);
    return response;
  }

  /** A 429: counted, and the wait Sellsy asks for (Retry-After, quota headers) carried by the error. */
  async #rateLimited(what: string, response: Response): Promise<RetryLaterError> {
    this.rateLimited++;
    await response.body?.cancel();
    const delayMs = this.#retryDelay(response.headers);
    return new RetryLaterError(`${what} answered 429 (rate limited); retry in ${delayMs} ms`, delayMs);
  }

  /** Turns an answer other than 401 into its JSON body or the error the worker expects. */
  async #read<T>(method: string, path: string, response: Response): Promise<T> {
    const what = `Sellsy API ${method} ${path}`;
    if (response.status === 429) throw await this.#rateLimited(what, response);
    if (response.status >= 400) {
      const detail = await this.#errorDetail(response);
      throw answerError(response.status, `${what} answered ${response.status}${detail}`);
    }
    let text: string;
    try {
      text = await response.text();
    } catch (err) {
      throw new Error(`${what}: the answer was cut off (${describe(err)})`, { cause: err });
    }
    if (text.trim() === '') return null as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new Error(`${what} answered ${response.status} with a body that is not JSON`);
    }
  }

  /** When the last answer said this second's quota is spent, wait for the next second rather than earn a 429. */
  async #slowDown(signal: AbortSignal | undefined): Promise<void> {
    const { bySecond, at } = this.quota;
    if (bySecond !== 0 || at === null) return;
    const wait = Math.min(1000, Math.floor(at / 1000) * 1000 + 1000 - this.#now());
    if (wait <= 0) return;
    try {
      await sleep(wait, undefined, signal ? { signal } : undefined);
    } catch (err) {
      throw new Error('Sellsy API call: aborted while waiting for the next quota second', { cause: err });
    }
  }

  #retryDelay(headers: Headers): number {
    const retryAfter = headers.get('retry-after')?.trim();
    if (retryAfter) {
      if (/^\d+(\.\d+)?$/.test(retryAfter)) return Math.max(0, Math.ceil(Number(retryAfter) * 1000));
      const date = Date.parse(retryAfter);
      if (!Number.isNaN(date)) return Math.max(0, date - this.#now());
    }
    // The longest exhausted window decides. A daily or monthly quota resets at a time Sellsy does not send: check
    // again every 5 minutes instead of every second (RetryLaterError uses no attempt, however long it lasts).
    if (this.quota.byMonth === 0 || this.quota.byDay === 0) return 300_000;
    if (this.quota.byMinute === 0) return 60_000 - (this.#now() % 60_000);
    return 1000;
  }

  #readQuota(headers: Headers): void {
    let seen = false;
    const quota = { ...this.quota };
    for (const [field, header] of QUOTA_HEADERS) {
      const value = headers.get(header);
      if (value === null || !/^\s*-?\d+\s*$/.test(value)) continue;
      quota[field] = Number(value);
      seen = true;
    }
    if (seen) this.quota = { ...quota, at: this.#now() };
  }

  async #getToken(signal: AbortSignal | undefined): Promise<Token> {
    const token = this.#token;
    if (token !== null && this.#now() < token.refreshAt) return token;
    if (this.#tokenPending === null) {
      this.#tokenPending = this.#fetchToken().finally(() => {
        this.#tokenPending = null;
      });
      // Every waiter may have given up (aborted) before a failure: that failure is theirs, not an unhandled one.
      this.#tokenPending.catch(() => {});
    }
    // The request is shared: one caller's abort stops its own wait, not the others'.
    return signal ? abortable(this.#tokenPending, signal) : this.#tokenPending;
  }

  async #fetchToken(): Promise<Token> {
    const { clientId, clientSecret, tokenUrl } = this.#options;
    const sentAt = this.#now();
    this.tokenRequests++;
    const response = await this.#fetch('token request', tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret }),
      signal: AbortSignal.timeout(this.#options.timeoutMs),
    });
    if (response.status === 429) throw await this.#rateLimited('Sellsy token endpoint', response);
    if (response.status >= 400) {
      const detail = await this.#errorDetail(response);
      throw answerError(
        response.status,
        response.status < 500
          ? `Sellsy rejected the client credentials (token endpoint answered ${response.status}${detail}); ` +
              'check SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET'
          : `Sellsy token endpoint answered ${response.status}${detail}`,
      );
    }
    let parsed: { access_token?: unknown; expires_in?: unknown };
    try {
      parsed = (await response.json()) as typeof parsed;
    } catch {
      throw new Error(`Sellsy token endpoint answered ${response.status} with a body that is not JSON`);
    }
    if (typeof parsed?.access_token !== 'string' || parsed.access_token === '') {
      throw new Error(`Sellsy token endpoint answered ${response.status} without an access_token`);
    }
    const lifetimeMs = (Number(parsed.expires_in) > 0 ? Number(parsed.expires_in) : 3600) * 1000;
    // A lifetime shorter than twice the margin (never seen from Sellsy) would refresh on every call: use half of it.
    const margin = Math.min(REFRESH_MARGIN_MS, lifetimeMs / 2);
    const token = { value: parsed.access_token, refreshAt: sentAt + lifetimeMs - margin };
    this.#token = token;
    return token;
  }

  /** `fetch` whose failures (network, timeout, abort) become plain retryable errors naming the call. */
  async #fetch(what: string, url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, init);
    } catch (err) {
      const name = (err as { name?: string }).name;
      const reason =
        name === 'TimeoutError'
          ? `timed out after ${this.#options.timeoutMs} ms`
          : name === 'AbortError'
            ? 'aborted'
            : describe(err);
      throw new Error(this.#scrub(`Sellsy API ${what}: ${reason}`), { cause: err });
    }
  }

  #signal(signal: AbortSignal | undefined): AbortSignal {
    const timeout = AbortSignal.timeout(this.#options.timeoutMs);
    return signal ? AbortSignal.any([signal, timeout]) : timeout;
  }

  /** ` (Sellsy: "<message>", code <code>)` from a `{"error":{…}}` body (or an OAuth `{"error": "…"}`), else ''. */
  async #errorDetail(response: Response): Promise<string> {
    let body: unknown;
    try {
      body = JSON.parse(await response.text());
    } catch {
      return '';
    }
    if (body === null || typeof body !== 'object') return '';
    const error = (body as { error?: unknown; error_description?: unknown }).error;
    let message: unknown;
    let code: unknown;
    if (error !== null && typeof error === 'object') {
      ({ message, code } = error as { message?: unknown; code?: unknown });
    } else if (typeof error === 'string') {
      code = error;
      message = (body as { error_description?: unknown }).error_description;
    }
    const parts: string[] = [];
    if (typeof message === 'string' && message !== '') parts.push(JSON.stringify(message.slice(0, MAX_DETAIL)));
    if (typeof code === 'string' || typeof code === 'number') parts.push(`code ${String(code).slice(0, 80)}`);
    return parts.length === 0 ? '' : this.#scrub(` (Sellsy: ${parts.join(', ')})`);
  }

  /** Removes the secret and the current token from a message, in case a server echoed them. */
  #scrub(message: string): string {
    const secret = this.#options.clientSecret;
    let out = secret === '' ? message : message.replaceAll(secret, '[redacted]');
    if (this.#token !== null) out = out.replaceAll(this.#token.value, '[redacted]');
    return out;
  }
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return `${err.message}${cause}`;
}

/** `promise`, or a rejection as soon as `signal` aborts (the promise itself keeps running). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new Error('Sellsy API token request: aborted', { cause: signal.reason }));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new Error('Sellsy API token request: aborted', { cause: signal.reason }));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/**
 * One client per Sellsy account (record ids are per account), each with its own token. `fallback` serves the
 * accounts without their own client: the single `SELLSY_CLIENT_ID` when `SELLSY_ACCOUNT_ID` does not name its
 * account (one account, the quick start); else null, and such an account has no client. The counters and the quota
 * add up every client's, for the metrics (the quota shown is the one Sellsy sent last).
 */
export class SellsyAccounts {
  constructor(
    private readonly byAccount: ReadonlyMap<string, SellsyApi>,
    private readonly fallback: SellsyApi | null,
  ) {}

  static fromConfig(settings: {
    accountId: string | null;
    credentials: ReadonlyMap<string, { clientId: string; clientSecret: string }>;
    single: { clientId: string; clientSecret: string } | null;
    apiUrl: string;
    tokenUrl: string;
    timeoutMs: number;
  }): SellsyAccounts {
    const { apiUrl, tokenUrl, timeoutMs } = settings;
    const clients = new Map<string, SellsyApi>();
    for (const [account, c] of settings.credentials)
      clients.set(account, new SellsyApi({ ...c, apiUrl, tokenUrl, timeoutMs }));
    const single = settings.single ? new SellsyApi({ ...settings.single, apiUrl, tokenUrl, timeoutMs }) : null;
    if (single !== null && settings.accountId !== null && !clients.has(settings.accountId)) {
      clients.set(settings.accountId, single);
    }
    return new SellsyAccounts(clients, settings.accountId === null ? single : null);
  }

  /** The client of an account's records, or null when none is configured for it. */
  clientFor(account: string | null): SellsyApi | null {
    return (account === null ? undefined : this.byAccount.get(account)) ?? this.fallback;
  }

  /**
   * Each client with the account its records are attributed to, in configuration order: those of
   * `SELLSY_ACCOUNT_CREDENTIALS`, then the single client (under `SELLSY_ACCOUNT_ID`, or null without it).
   */
  entries(): { account: string | null; api: SellsyApi }[] {
    const named = [...this.byAccount].map(([account, api]) => ({ account, api }));
    return this.fallback === null ? named : [...named, { account: null, api: this.fallback }];
  }

  private all(): SellsyApi[] {
    return [...new Set([...this.byAccount.values(), ...(this.fallback ? [this.fallback] : [])])];
  }

  get calls(): number {
    return this.all().reduce((n, c) => n + c.calls, 0);
  }

  get rateLimited(): number {
    return this.all().reduce((n, c) => n + c.rateLimited, 0);
  }

  get quota(): SellsyQuota {
    const latest = this.all().reduce<SellsyQuota | null>(
      (q, c) => (c.quota.at !== null && (q === null || (q.at ?? 0) < c.quota.at) ? c.quota : q),
      null,
    );
    return latest ?? { bySecond: null, byMinute: null, byDay: null, byMonth: null, at: null };
  }
}
