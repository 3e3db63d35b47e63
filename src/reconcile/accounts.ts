/**
 * The Sellsy accounts reconciliation reads, each with its own API client: `SELLSY_ACCOUNT_CREDENTIALS`, and the single
 * `SELLSY_CLIENT_ID` under its `SELLSY_ACCOUNT_ID`. Shared by `backfill` and the workers' periodic reconcile.
 * Changes are attributed to an account (Sellsy ids are per account): the single client without `SELLSY_ACCOUNT_ID`
 * is not read (a `ConfigError` when it is the only one).
 */
import type { Config } from '../config/config.ts';
import { ConfigError } from '../errors.ts';
import { SellsyAccounts, type SellsyApi } from '../sellsy/api.ts';

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
  if (config.sellsyFetch === null) {
    throw new ConfigError([
      `${who} reads the Sellsy API: set SELLSY_CLIENT_ID and SELLSY_CLIENT_SECRET (with SELLSY_ACCOUNT_ID), or SELLSY_ACCOUNT_CREDENTIALS`,
    ]);
  }
  const all = everyAccountClient(config, shared);
  const attributed = all.filter((c): c is AccountClient => c.account !== null);
  if (attributed.length < all.length) {
    if (attributed.length === 0) {
      throw new ConfigError([
        `SELLSY_ACCOUNT_ID: ${who} attributes the changes it finds to an account; set it to the Sellsy account id (corpid) of SELLSY_CLIENT_ID`,
      ]);
    }
    warn(`${who}: SELLSY_CLIENT_ID has no SELLSY_ACCOUNT_ID: its account is not read`);
  }
  return attributed;
}

/**
 * Every Sellsy API client of the configuration (`SellsyAccounts`: one per `SELLSY_ACCOUNT_CREDENTIALS` account and
 * the single client), with its account, null for the single client without `SELLSY_ACCOUNT_ID`: for reading what
 * each account holds beyond its records (its webhooks), and under `accountClients`. Empty without credentials.
 */
export function everyAccountClient(
  config: Config,
  shared: SellsyAccounts | null = null,
): { account: string | null; api: SellsyApi }[] {
  const settings = config.sellsyFetch;
  const accounts =
    shared ?? (settings === null ? null : SellsyAccounts.fromConfig({ ...settings, single: config.sellsyApi }));
  return accounts?.entries() ?? [];
}
