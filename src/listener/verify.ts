/**
 * Chooses the keys for a delivery and checks its signature.
 *
 * Accounts are Sellsy account ids (`corpid`). The account of a delivery is its payload's `corpid`, or the path
 * segment of `/webhook/sellsy/<account>` when the payload has none; when both are present they must be equal
 * (`account_mismatch`), so a key cannot vouch for another account's events. The account's keys in
 * `SELLSY_ACCOUNT_KEYS` are the only ones that can sign for it; an account without its own keys uses
 * `SELLSY_SIGN_KEY`, and with no `SELLSY_SIGN_KEY` it is refused (`unknown_account`).
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

/** The account of a delivery, or an error when the path segment and the payload's `corpid` disagree. */
export function accountOf(
  pathAccount: string | undefined,
  corpId: string | null | undefined,
): { ok: true; account: string | null } | { ok: false; error: 'account_mismatch' } {
  const fromPath = pathAccount === undefined || pathAccount === '' ? null : pathAccount;
  const fromBody = corpId === undefined || corpId === null || corpId === '' ? null : corpId;
  if (fromPath !== null && fromBody !== null && fromPath !== fromBody) return { ok: false, error: 'account_mismatch' };
  return { ok: true, account: fromBody ?? fromPath };
}

/** The listener's verdict: checked now, carried as `unchecked` (SIGNATURE_CHECK=worker), or `not_configured`. */
export function verifyDelivery(
  config: Config,
  account: string | null,
  signedBytes: Buffer | string,
  header: string | undefined,
): Verdict {
  const { keys: globalKeys, accountKeys, check } = config.signature;
  if (globalKeys.length === 0 && accountKeys.size === 0) return { ok: true, status: 'not_configured' };
  if (check === 'worker') return { ok: true, status: 'unchecked' };
  return checkSignature(config, account, signedBytes, header);
}

/** The check itself, with the account's keys; also what a worker runs on an `unchecked` job. */
export function checkSignature(
  config: Config,
  account: string | null,
  signedBytes: Buffer | string,
  header: string | undefined,
): Verdict {
  const keys = keysFor(config, account);
  if (keys.length === 0) return { ok: false, error: 'unknown_account' };
  if (header === undefined || header === '') return { ok: false, error: 'missing_signature' };
  return matchSignature(keys, signedBytes, header) >= 0
    ? { ok: true, status: 'verified' }
    : { ok: false, error: 'bad_signature' };
}
