/**
 * What reconciliation can search in each Sellsy collection, and how (Sellsy's OpenAPI file, version 2.264.0;
 * docs/reconciliation.md says what each strategy catches and misses):
 *
 * - `incremental`: the search has a modification filter (`filter`) over a field of the object (`changedAt`): every
 *   object changed in the window is found, with its change time.
 * - `rescan`: no modification filter. The objects created (`filter`) in a look-back window are read again, and a
 *   fingerprint of the fields that change (status, amounts, dates) is compared with the one stored at the last scan.
 *
 * `relatedType` is what Sellsy's webhooks call such an object (`relatedtype`), the synthetic job's name and event:
 * companies are posted as `third` (also `client`, `prospect`: one record, see `recordKeyOf`), contacts as `people`.
 */

export type Strategy =
  | { kind: 'incremental'; filter: string; changedAt: string }
  | { kind: 'rescan'; filter: string; created: string };

export interface CollectionPlan {
  /** The Sellsy API collection: `/v2/<collection>/search`. */
  collection: string;
  relatedType: string;
  strategy: Strategy;
}

/** A search by a modification field: the filter and the change time are the same field. */
const incremental = (collection: string, relatedType: string, field: string): CollectionPlan => ({
  collection,
  relatedType,
  strategy: { kind: 'incremental', filter: field, changedAt: field },
});

/** A rescan of the objects created in the look-back window (`created`: the only date range these searches take). */
const rescan = (collection: string, relatedType: string): CollectionPlan => ({
  collection,
  relatedType,
  strategy: { kind: 'rescan', filter: 'created', created: 'created' },
});

export const PLANS: readonly CollectionPlan[] = [
  incremental('companies', 'third', 'updated_at'),
  incremental('individuals', 'individual', 'updated_at'),
  incremental('contacts', 'people', 'updated'),
  rescan('invoices', 'invoice'),
  rescan('estimates', 'estimate'),
];

/** The collections `backfill` reads when `--types` is not given. */
export const DEFAULT_TYPES: readonly string[] = PLANS.map((p) => p.collection);

export function planOf(collection: string): CollectionPlan | null {
  return PLANS.find((p) => p.collection === collection) ?? null;
}
