/**
 * Chooses the keys for a delivery and checks its signature.
 *
 * Key selection: the account named by the path segment (`/webhook/sellsy/<account>`) or else the payload's
 * `corpid` picks its keys in `SELLSY_ACCOUNT_KEYS`; an account without its own keys falls back to `SELLSY_SIGN_KEY`.
 * With per-account keys and no fallback key, an account that has no keys is refused (`unknown_account`).
 * The `corpid` used for selection comes from the unverified body; that is safe because the signature must then
 * match that account's key.
 */
import type { Config } from '../config/config.ts';
import type { HttpErrorCode } from '../errors.ts';
import type { SignatureStatus } from '../queue/contract.ts';
import { matchSignature } from '../sellsy/signature.ts';

export type Verdict = { ok: true; status: SignatureStatus } | { ok: false; error: HttpErrorCode };

export function keysFor(config: Config, account: string | null): readonly string[] {
  const own = account === null ? undefined : config.signature.accountKeys.get(account);
  return own ?? config.signature.keys;
}

export function verifyDelivery(
  config: Config,
  account: string | null,
  signedBytes: Buffer | string,
  header: string | undefined,
): Verdict {
  const { keys: globalKeys, accountKeys, check } = config.signature;
  if (globalKeys.length === 0 && accountKeys.size === 0) return { ok: true, status: 'not_configured' };
  const keys = keysFor(config, account);
  if (check === 'worker') return { ok: true, status: 'unchecked' };
  if (keys.length === 0) return { ok: false, error: 'unknown_account' };
  if (header === undefined || header === '') return { ok: false, error: 'missing_signature' };
  return matchSignature(keys, signedBytes, header) >= 0
    ? { ok: true, status: 'verified' }
    : { ok: false, error: 'bad_signature' };
}
