/** How a configuration error shows a value: secrets never, passwords in URLs masked. */
import { redactUrl } from '../redact.ts';

/** Variables whose value is a secret: an error names them, never repeats them. */
export const SECRETS = new Set([
  'SELLSY_SIGN_KEY',
  'SELLSY_ACCOUNT_KEYS',
  'FORWARD_SECRET',
  'SELLSY_CLIENT_SECRET',
  'SELLSY_ACCOUNT_CREDENTIALS',
  'ADMIN_PASSWORD',
  'ADMIN_TOKEN',
  'REDIS_SENTINEL_PASSWORD',
]);

/** A value as an error message may show it: secrets hidden, passwords in URLs masked. */
export function shown(name: string, value: string): string {
  if (SECRETS.has(name)) return `a value of ${value.length} characters, not shown`;
  return JSON.stringify(URL.canParse(value) ? redactUrl(value) : value);
}
