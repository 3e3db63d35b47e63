/**
 * What the benchmarks send: Sellsy-like webhook deliveries, unique per id (the listener deduplicates on the raw body,
 * so repeated bodies would be folded into one job and measure a different path), and Sellsy's signature.
 *
 * The signature is recomputed here rather than imported from src/, which also cross-checks the service's verification.
 */
import { createHash } from 'node:crypto';

export const WEBHOOK_PATH = '/webhook/sellsy';
/** The list the floor reference server LPUSHes every body to. */
export const FLOOR_KEY = 'bench:floor';

/** A small Sellsy `docslog` delivery, unique per `id`. */
export function sellsyBody(id: number): string {
  const timestamp = Math.floor(Date.now() / 1000);
  return (
    `{"eventType":"docslog","event":"step","relatedtype":"invoice","relatedid":"${id}",` +
    `"ownertype":"staff","ownerid":"1084","corpid":"929","timestamp":"${timestamp}"}`
  );
}

/** Sellsy's signature: lowercase hex of sha1(key + raw body). Not an HMAC. */
export function sellsySignature(key: string, body: string): string {
  return createHash('sha1').update(key, 'utf8').update(body, 'utf8').digest('hex');
}

// ---------------------------------------------------------------------------------------------------------------
// Large deliveries: an invoice snapshot with many rows in `relatedobject`

/** A Sellsy invoice snapshot with enough rows that the body reaches `size` bytes once encoded. */
function invoiceJson(size: number, form: boolean): string {
  const rows: unknown[] = [];
  const encodedSize = (s: string) => Buffer.byteLength(form ? `notif=${encodeURIComponent(s)}` : s);
  const build = () =>
    JSON.stringify({
      eventType: 'docslog',
      event: 'step',
      relatedtype: 'invoice',
      relatedid: '__ID__',
      ownertype: 'staff',
      ownerid: '1084',
      corpid: '929',
      timestamp: '__TS__',
      relatedobject: {
        id: '__ID__',
        ident: 'FAC-__ID__',
        status: 'due',
        thirdname: 'Société Générale des Ateliers «Dupont & Fils»',
        currency: 'EUR',
        rows,
      },
    });
  const rowOf = (i: number) => ({
    id: String(100000 + i),
    type: 'item',
    name: `Article ${i} — maintenance préventive`,
    notes: `Intervention n°${i} : contrôle, réglage et remplacement des pièces d'usure; "garantie" 12 mois.`,
    qt: '2.000',
    unitAmount: '149.90',
    taxrate: '20.00',
    discount: { type: 'percent', value: '5' },
  });
  // Rows are about the same size: estimate their number from one row, then trim.
  const base = encodedSize(build());
  rows.push(rowOf(0));
  const perRow = encodedSize(build()) - base;
  while (rows.length < Math.floor((size - base) / perRow)) rows.push(rowOf(rows.length));
  while (rows.length > 0 && encodedSize(build()) > size) rows.pop();
  return build();
}

export interface LargeBodyTemplates {
  form: string;
  json: string;
}

/** Templates of large deliveries of about `size` bytes, as a `notif=` form and as JSON. */
export function largeBodyTemplates(size: number): LargeBodyTemplates {
  // The id and timestamp placeholders are replaced by values of the same order of length (≤ 12 characters).
  return { form: invoiceJson(size - 40, true), json: invoiceJson(size - 40, false) };
}

/** Delivery `n` from the templates: even `n` a `notif=` form, odd `n` JSON; unique per `n`. */
export function largeBody(t: LargeBodyTemplates, n: number): { body: string; contentType: string } {
  const id = String(50_000_000 + n);
  const ts = String(Math.floor(Date.now() / 1000));
  if (n % 2 === 0) {
    const json = t.form.replaceAll('__ID__', id).replace('__TS__', ts);
    return { body: `notif=${encodeURIComponent(json)}`, contentType: 'application/x-www-form-urlencoded' };
  }
  return { body: t.json.replaceAll('__ID__', id).replace('__TS__', ts), contentType: 'application/json' };
}
