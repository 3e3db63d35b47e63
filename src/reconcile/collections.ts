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

export const PLANS: readonly CollectionPlan[] = [
  {
    collection: 'companies',
    relatedType: 'third',
    strategy: { kind: 'incremental', filter: 'updated_at', changedAt: 'updated_at' },
  },
  {
    collection: 'individuals',
    relatedType: 'individual',
    strategy: { kind: 'incremental', filter: 'updated_at', changedAt: 'updated_at' },
  },
  {
    collection: 'contacts',
    relatedType: 'people',
    strategy: { kind: 'incremental', filter: 'updated', changedAt: 'updated' },
  },
  {
    collection: 'invoices',
    relatedType: 'invoice',
    strategy: { kind: 'rescan', filter: 'created', created: 'created' },
  },
  {
    collection: 'estimates',
    relatedType: 'estimate',
    strategy: { kind: 'rescan', filter: 'created', created: 'created' },
  },
];

/** The collections `backfill` reads when `--types` is not given. */
export const DEFAULT_TYPES: readonly string[] = PLANS.map((p) => p.collection);

export function planOf(collection: string): CollectionPlan | null {
  return PLANS.find((p) => p.collection === collection) ?? null;
}
