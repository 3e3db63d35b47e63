/**
 * The fingerprint of an object found by a rescan: a hash of the fields that change over its life (status, amounts,
 * dates, what it is linked to), so that a change between two scans shows as a different fingerprint. Fields that
 * change without the object changing (signed links) are left out; an object with none of the fields is hashed whole.
 */
import { hash } from 'node:crypto';

const FIELDS = [
  'status',
  'step',
  'amounts',
  'date',
  'due_date',
  'expiry_date',
  'number',
  'subject',
  'currency',
  'related',
  'owner',
  'payments',
  'updated',
  'updated_at',
];

/** JSON with object keys sorted at every level: the same value always gives the same text. */
function stable(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stable).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stable(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

export function fingerprintOf(object: Record<string, unknown>): string {
  const picked: Record<string, unknown> = {};
  for (const field of FIELDS) if (field in object) picked[field] = object[field];
  const basis = Object.keys(picked).length > 0 ? picked : object;
  return hash('sha256', stable(basis), 'hex').slice(0, 32);
}
