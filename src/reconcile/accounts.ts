/**
 * The Sellsy accounts reconciliation reads, each with its own API client: `SELLSY_ACCOUNT_CREDENTIALS`, and the single
 * `SELLSY_CLIENT_ID` under its `SELLSY_ACCOUNT_ID`. Shared by `backfill` and the workers' periodic reconcile.
 * Changes are attributed to an account (Sellsy ids are per account): the single client without `SELLSY_ACCOUNT_ID`
 * is not read (a `ConfigError` when it is the only one).
 */
import type { Config } from '../config/config.ts';
import { ConfigError } from '../errors.ts';
import { type SellsyAccounts, SellsyApi } from '../sellsy/api.ts';

export interface AccountClient {
  account: string;
  api: SellsyApi;
}

/**
 * `who` names the reader in messages (`backfill`, `the periodic reconcile`); `warn` is told of an unread client.
 * `shared`: the clients the process already has (a worker's sellsy-fetch), reused so that an account has one token
 * and one view of its quota, not one per reader.
 */
export function accountClients(
  config: Config,
  who: string,
  warn: (message: string) => void,
  shared: SellsyAccounts | null = null,
): AccountClient[] {
  const settings = config.sellsyFetch;
  if (settings === null) {
    throw new ConfigError([
      `${who} reads the Sellsy API: set SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET (with SELLSY_ACCOUNT_ID), or SELLSY_ACCOUNT_CREDENTIALS`,
    ]);
  }
  const { apiUrl, tokenUrl, timeoutMs } = settings;
  const clients = [...settings.credentials].map(([account, c]) => ({
    account,
    api: shared?.clientFor(account) ?? new SellsyApi({ ...c, apiUrl, tokenUrl, timeoutMs }),
  }));
  const single = config.sellsyApi;
  if (single !== null && settings.accountId !== null && !settings.credentials.has(settings.accountId)) {
    clients.push({ account: settings.accountId, api: shared?.clientFor(settings.accountId) ?? new SellsyApi(single) });
  } else if (single !== null && settings.accountId === null) {
    if (clients.length === 0) {
      throw new ConfigError([
        `SELLSY_ACCOUNT_ID: ${who} attributes the changes it finds to an account; set it to the Sellsy account id (corpid) of SELLSY_CLIENT_ID`,
      ]);
    }
    warn(`${who}: SELLSY_CLIENT_ID has no SELLSY_ACCOUNT_ID: its account is not read`);
  }
  return clients;
}

/**
 * Every Sellsy API client of the configuration, for reading what each account holds beyond its records (its
 * webhooks): one per `SELLSY_ACCOUNT_CREDENTIALS` account and the single client, under `SELLSY_ACCOUNT_ID` or, unlike
 * `accountClients`, under no account (nothing read from it is attributed to records). Empty without credentials.
 */
export function everyAccountClient(
  config: Config,
  shared: SellsyAccounts | null = null,
): { account: string | null; api: SellsyApi }[] {
  const settings = config.sellsyFetch;
  const clients: { account: string | null; api: SellsyApi }[] = [];
  if (settings !== null) {
    const { apiUrl, tokenUrl, timeoutMs } = settings;
    for (const [account, c] of settings.credentials) {
      clients.push({
        account,
        api: shared?.clientFor(account) ?? new SellsyApi({ ...c, apiUrl, tokenUrl, timeoutMs }),
      });
    }
  }
  const single = config.sellsyApi;
  const singleAccount = settings?.accountId ?? null;
  if (single !== null && (singleAccount === null || !clients.some((c) => c.account === singleAccount))) {
    const sharedSingle = singleAccount === null ? null : shared?.clientFor(singleAccount);
    clients.push({ account: singleAccount, api: sharedSingle ?? shared?.clientFor(null) ?? new SellsyApi(single) });
  }
  return clients;
}
