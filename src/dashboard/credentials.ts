/**
 * The dashboard's login: an `Authorization` header checked against `ADMIN_USER`/`ADMIN_PASSWORD` (Basic) and
 * `ADMIN_TOKEN` (Bearer), in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Config } from '../config/config.ts';

export type AuthOutcome = 'ok' | 'missing' | 'wrong';

/** Checks an `Authorization` header against the configured login and token, in constant time. */
export function credentialsCheck(admin: NonNullable<Config['admin']>): (header: string | undefined) => AuthOutcome {
  // Digests have a fixed length, so comparing them leaks neither the secret's content nor its length.
  const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();
  const same = (given: string, expected: Buffer) => timingSafeEqual(digest(given), expected);
  const user = admin.user !== null ? digest(admin.user) : null;
  const password = admin.password !== null ? digest(admin.password) : null;
  const token = admin.token !== null ? digest(admin.token) : null;
  return (header) => {
    if (!header) return 'missing';
    const space = header.indexOf(' ');
    const scheme = header.slice(0, space < 0 ? header.length : space).toLowerCase();
    const value = space < 0 ? '' : header.slice(space + 1).trim();
    if (scheme === 'basic' && user && password) {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) return 'wrong';
      // Both compared, whatever the first gives: the time does not tell which one was wrong.
      const userOk = same(decoded.slice(0, colon), user);
      const passwordOk = same(decoded.slice(colon + 1), password);
      return userOk && passwordOk ? 'ok' : 'wrong';
    }
    if (scheme === 'bearer' && token) return same(value, token) ? 'ok' : 'wrong';
    return 'wrong';
  };
}
