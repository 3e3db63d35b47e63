/**
 * Sellsy's view of the webhooks posting to this service, read by the workers and exported as metrics, so that an
 * alert fires when Sellsy disables the endpoint or counts new failed deliveries (Sellsy retries nothing it documents:
 * each failure is a change lost until a backfill, docs/reconciliation.md).
 *
 * Started by a worker with a metrics registry and Sellsy API clients: one per account of `SELLSY_ACCOUNT_CREDENTIALS`
 * and the single `SELLSY_CLIENT_ID` (under `SELLSY_ACCOUNT_ID`, or no account), each account's webhooks read with
 * its own client. Every `intervalMs` (default 5 minutes) one process across all of them reads `GET /webhooks` of each
 * account: each tries a Redis key `<prefix>:<queue>:sellsy-webhooks:read` (SET NX, expiring after the interval), and
 * the one that takes it reads and stores what it read under `…:sellsy-webhooks:view`; every process exports that
 * stored view, so all workers export the same figures for about one API call per account and interval, however many
 * workers run. The calls go through `SellsyApi` clients (sellsy-fetch's own when it is on): their tokens, quota
 * figures and 429 handling. An account whose read fails keeps the webhooks of its previous read (logged; the next
 * interval tries again), so one account's outage does not hide the others nor its own last known state.
 *
 * "Posting to this service": a webhook whose endpoint path is `/webhook/sellsy` or `/webhook/sellsy/<account>`,
 * whatever the host (the workers do not know the public URL).
 */
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import type { RedisClient } from '../queue/connection.ts';
import { shownUrl } from '../redact.ts';
import type { SellsyApi } from '../sellsy/api.ts';
import {
  failuresOf,
  idOf,
  lastFailedMs,
  listenerPathOf,
  listWebhooks,
  type SellsyWebhook,
} from '../sellsy/webhooks.ts';

export const WEBHOOK_WATCH_INTERVAL_MS = 5 * 60_000;

/** One webhook as exported. */
export interface WatchedWebhook {
  /** The account whose API client listed it; null for the single client without `SELLSY_ACCOUNT_ID`. */
  account: string | null;
  id: string;
  endpoint: string;
  enabled: boolean;
  failures: number;
  /** `last_failed` in ms since the epoch; null when Sellsy has none (or an unreadable one). */
  lastFailedMs: number | null;
}

export interface WebhookView {
  /** When it was read, ms since the epoch. */
  readAt: number;
  webhooks: WatchedWebhook[];
  /** When each account was last read successfully, ms since the epoch; key `''` for the single client without account. */
  accountsReadAt?: Record<string, number>;
}

/** An account's API client; `account` null: the single client without `SELLSY_ACCOUNT_ID`. */
export interface WebhookReader {
  account: string | null;
  api: SellsyApi;
}

export interface WebhookWatchOptions {
  client: RedisClient;
  /** One per account, read in turn each interval. */
  readers: readonly WebhookReader[];
  /** `<QUEUE_PREFIX>:<QUEUE_NAME>`. */
  keyPrefix: string;
  registry: Registry;
  log: Logger;
  intervalMs?: number;
}

export interface WebhookWatch {
  /** One tick now: read Sellsy if no other process did this interval, then load the stored view. */
  tick(): Promise<void>;
  close(): void;
}

/** Whether a webhook's endpoint is one of this service's listener paths. */
export function postsToThisService(endpoint: unknown): boolean {
  return listenerPathOf(endpoint) !== null;
}

/** The exported fields of the webhooks posting to this service, as listed by `account`'s client. */
export function watchedOf(account: string | null, webhooks: readonly SellsyWebhook[]): WatchedWebhook[] {
  return webhooks
    .filter((w) => postsToThisService(w.endpoint))
    .map((w) => ({
      account,
      id: idOf(w) ?? '?',
      // Origin and path: a query string or user info may hold a token, which must not become a label.
      endpoint: shownUrl(String(w.endpoint)),
      enabled: w.is_enabled === true,
      failures: failuresOf(w),
      lastFailedMs: lastFailedMs(w),
    }));
}

/** The gauges, set from `view()` when scraped (and emptied first: a deleted webhook leaves no stale series). */
export function createWebhookWatchMetrics(registry: Registry, view: () => WebhookView | null): void {
  const labelNames = ['account', 'webhook', 'endpoint'] as const;
  const each = (name: string, help: string, value: (w: WatchedWebhook) => number | null) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const w of view()?.webhooks ?? []) {
          const v = value(w);
          if (v !== null) this.set({ account: w.account ?? '', webhook: w.id, endpoint: w.endpoint }, v);
        }
      },
    });
  each(
    'sellsy_webhooks_sellsy_webhook_enabled',
    "Sellsy's is_enabled of each webhook posting to this service (0: Sellsy sends it nothing).",
    (w) => (w.enabled ? 1 : 0),
  );
  each(
    'sellsy_webhooks_sellsy_webhook_failures',
    "Sellsy's nb_failures of each webhook posting to this service: deliveries it counts as failed.",
    (w) => w.failures,
  );
  each(
    'sellsy_webhooks_sellsy_webhook_last_failure_timestamp_seconds',
    "Sellsy's last_failed of each webhook posting to this service (absent when it has none).",
    (w) => (w.lastFailedMs === null ? null : w.lastFailedMs / 1000),
  );
  new Gauge({
    name: 'sellsy_webhooks_sellsy_webhook_view_timestamp_seconds',
    help: "When each account's webhooks were last read from Sellsy (by any worker).",
    labelNames: ['account'] as const,
    registers: [registry],
    collect() {
      const v = view();
      this.reset();
      for (const [account, at] of Object.entries(v?.accountsReadAt ?? {})) this.set({ account }, at / 1000);
    },
  });
}

export function startWebhookWatch(options: WebhookWatchOptions): WebhookWatch {
  const { client, readers, log } = options;
  const intervalMs = options.intervalMs ?? WEBHOOK_WATCH_INTERVAL_MS;
  const readKey = `${options.keyPrefix}:sellsy-webhooks:read`;
  const viewKey = `${options.keyPrefix}:sellsy-webhooks:view`;
  let view: WebhookView | null = null;
  let lastError = '';
  createWebhookWatchMetrics(options.registry, () => view);

  /**
   * Each account's webhooks. An account whose read fails keeps those of `previous` while its last successful read is
   * under 3 intervals old; then its series disappear, as the whole view's would, rather than look current. Null when
   * every read failed (the stored view is left to expire).
   */
  async function readAll(previous: WebhookView | null): Promise<WebhookView | null> {
    const now = Date.now();
    const webhooks: WatchedWebhook[] = [];
    const accountsReadAt: Record<string, number> = {};
    const failures: string[] = [];
    for (const { account, api } of readers) {
      const key = account ?? '';
      try {
        webhooks.push(...watchedOf(account, await listWebhooks(api)));
        accountsReadAt[key] = now;
      } catch (err) {
        failures.push(`${account === null ? 'SELLSY_CLIENT_ID' : `account ${account}`}: ${(err as Error).message}`);
        const lastRead = previous?.accountsReadAt?.[key];
        if (lastRead !== undefined && now - lastRead < 3 * intervalMs) {
          accountsReadAt[key] = lastRead;
          webhooks.push(...(previous?.webhooks.filter((w) => (w.account ?? null) === account) ?? []));
        }
      }
    }
    const problem = failures.join('; ');
    if (problem !== lastError && problem !== '')
      log.warn({ err: problem }, "Sellsy's view of the webhooks could not be read");
    lastError = problem;
    return failures.length === readers.length ? null : { readAt: now, webhooks, accountsReadAt };
  }

  async function tick(): Promise<void> {
    try {
      let stored = await client.get(viewKey);
      if ((await client.set(readKey, String(process.pid), 'PX', intervalMs, 'NX')) !== null) {
        const read = await readAll(stored === null ? null : (JSON.parse(stored) as WebhookView));
        if (read !== null) {
          stored = JSON.stringify(read);
          // Kept three intervals: a view older than that (every read failing) disappears rather than look current.
          await client.set(viewKey, stored, 'PX', 3 * intervalMs);
        }
      }
      view = stored === null ? null : (JSON.parse(stored) as WebhookView);
    } catch (err) {
      const message = (err as Error).message;
      if (message !== lastError) log.warn({ err: message }, "Sellsy's view of the webhooks could not be read");
      lastError = message;
    }
  }

  // A few ticks per interval: the process holding the read key reads Sellsy, the others pick up its view soon after.
  // One tick at a time: a slow Sellsy (up to its timeout) must not pile reads up behind one another.
  let running: Promise<void> | null = null;
  const once = () => {
    running ??= tick().finally(() => {
      running = null;
    });
    return running;
  };
  const timer = setInterval(() => void once(), Math.max(100, Math.floor(intervalMs / 4)));
  timer.unref();
  void once();
  return {
    tick: once,
    close() {
      clearInterval(timer);
    },
  };
}
