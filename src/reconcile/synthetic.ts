/**
 * The synthetic delivery of one change reconciliation found: a job of the queue contract (src/queue/contract.ts), as
 * if Sellsy had posted a JSON notification about the record, so handlers need no second code path.
 *
 * - name `<relatedtype>.reconciled`; `source` `reconcile`; signature status `internal`; no `request`.
 * - `rawBody`: the notification, JSON (`contentType` `application/json`): `eventType` `reconcile`, `event`
 *   `reconciled`, `relatedtype`, `relatedid`, `corpid` (the account), `timestamp` (Unix seconds of the change, else of
 *   the scan), and `collection`, `changedAt` (ISO 8601 or null), `fingerprint` (rescans, else null). `event` is that
 *   body parsed, as the listener would parse it.
 * - `dedupKey`: from the account, collection, id and the change (its time, or the fingerprint): the same change found
 *   again within `DEDUP_WINDOW_SECONDS` makes no second job.
 */
import { dedupKeyOf, newDeliveryId, type WebhookJob } from '../queue/contract.ts';
import { parseDelivery } from '../sellsy/payload.ts';

export interface Change {
  account: string;
  collection: string;
  relatedType: string;
  id: string;
  /** The change time from the object (incremental strategy), else null. */
  changedAt: number | null;
  /** The object's fingerprint (rescan strategy), else null. */
  fingerprint: string | null;
}

const CONTENT_TYPE = 'application/json';

export function syntheticJob(change: Change, now: Date): WebhookJob {
  const changedAt = change.changedAt === null ? null : new Date(change.changedAt).toISOString();
  const rawBody = JSON.stringify({
    eventType: 'reconcile',
    event: 'reconciled',
    relatedtype: change.relatedType,
    relatedid: change.id,
    corpid: change.account,
    timestamp: String(Math.floor((change.changedAt ?? now.getTime()) / 1000)),
    collection: change.collection,
    changedAt,
    fingerprint: change.fingerprint,
  });
  const what = changedAt !== null ? `at:${changedAt}` : `fp:${change.fingerprint ?? ''}`;
  return {
    name: `${change.relatedType}.reconciled`,
    data: {
      v: 1,
      deliveryId: newDeliveryId(),
      receivedAt: now.toISOString(),
      contentType: CONTENT_TYPE,
      rawBody,
      account: change.account,
      signature: { status: 'internal', header: null, scope: 'body' },
      event: parseDelivery(Buffer.from(rawBody, 'utf8'), CONTENT_TYPE).event,
      parseProblem: null,
      dedupKey: dedupKeyOf(change.account, `reconcile\n${change.collection}\n${change.id}\n${what}`),
      source: 'reconcile',
    },
  };
}
