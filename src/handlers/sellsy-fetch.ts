/**
 * Built-in `sellsy-fetch`: treats a webhook as a hint and fetches the object it names from the Sellsy API v2, so the
 * handlers after it read `context.object` (the current state, which also settles out-of-order deliveries).
 *
 * - `deleted` events: nothing left to fetch; `object` stays undefined.
 * - a related type without a look-up by id, or an event without `relatedtype`/`relatedid`: `object` stays undefined.
 * - an unparsed delivery (event null): `PermanentError`, as there is nothing to look up.
 * - a `relatedid` that is not a plain id: `PermanentError` from `SellsyApi.getObject`, before any request (it would
 *   otherwise be put in a URL path).
 * - several accounts (`SellsyAccounts`): each job is fetched with its account's client (`data.account`; record ids are
 *   per account); a job whose account has none is a `PermanentError`, before any request.
 * API failures propagate as the client raises them (see `src/sellsy/api.ts`).
 */

import { PermanentError } from '../errors.ts';
import { collectionOf, type SellsyAccounts, SellsyApi } from '../sellsy/api.ts';
import type { Handler } from './handler.ts';

export function createSellsyFetchHandler(clients: SellsyApi | SellsyAccounts): Handler {
  return async function sellsyFetch(event, context) {
    if (event === null) throw new PermanentError('unparsed event: nothing to fetch');
    const { relatedType, relatedId } = event;
    if (event.event === 'deleted') {
      context.log.debug({ relatedType, relatedId }, 'sellsy-fetch: deleted object, nothing to fetch');
      return;
    }
    if (relatedType === null || relatedId === null) {
      context.log.debug({ relatedType, relatedId }, 'sellsy-fetch: event names no object, nothing to fetch');
      return;
    }
    if (collectionOf(relatedType) === null) {
      context.log.debug({ relatedType, relatedId }, 'sellsy-fetch: no API look-up for this related type');
      return;
    }
    const { account } = context.data;
    const api = clients instanceof SellsyApi ? clients : clients.clientFor(account);
    if (api === null) {
      throw new PermanentError(
        `no Sellsy API credentials for account ${JSON.stringify(account)}: add them to SELLSY_ACCOUNT_CREDENTIALS`,
      );
    }
    context.object = await api.getObject(relatedType, relatedId, { signal: context.signal });
  };
}
