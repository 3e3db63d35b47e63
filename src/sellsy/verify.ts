/**
 * Chooses the keys for a delivery and checks its signature.
 *
 * Accounts are Sellsy account ids (`corpid`). The account of a delivery is its payload's `corpid`, or the path
 * segment of `/webhook/sellsy/<account>` when the payload has none; when both are present they must be equal
 * (`account_mismatch`), so a key cannot vouch for another account's events. The account's keys in
 * `SELLSY_ACCOUNT_KEYS` are the only ones that can sign for it; an account without its own keys uses
 * `SELLSY_SIGN_KEY`, and with no `SELLSY_SIGN_KEY` it is refused (`unknown_account`).
 *
 * With per-account keys, the account picks the keys, so it is matched only in its canonical spelling: a `corpid`
 * must be a decimal number without leading zeros and a path account `[A-Za-z0-9_-]{1,64}`, or the delivery is refused
 * (`bad_account`). Otherwise `"0929"` or `"929 "` would not be account 929 and would fall back to `SELLSY_SIGN_KEY`.
 *
 * A signature that matches over bytes Sellsy never sends is refused (`forbidden_bytes`): see `hasForbiddenBytes`.
 */
import type { HttpErrorCode } from '../errors.ts';
import { hasForbiddenBytes, matchSignature } from './signature.ts';

/** What was checked of a delivery's signature; the listener writes it in the job (the queue contract). */
export type SignatureStatus =
  /** The listener checked it against a configured key before answering. */
  | 'verified'
  /** `SIGNATURE_CHECK=worker`: the consumer must check `signature.header` against `rawBody`. */
  | 'unchecked'
  /** No key is configured: nothing was checked. */
  | 'not_configured'
  /** Not a request: the service made the job itself (a synthetic delivery of reconciliation, src/reconcile/). */
  | 'internal';

/** What a signature covers: the raw body, or (`SIGNATURE_FORM_SCOPE=notif`) the decoded `notif` of a form body. */
export type SignedScope = 'body' | 'notif';

export type Verdict = { ok: true; status: SignatureStatus } | { ok: false; error: HttpErrorCode };

/**
 * The bytes a delivery's signature covers, and which they are: with scope `notif`, the decoded `notif` value of a
 * form body that has one (`notif` is asked only then), else the raw body. The listener, which checks at once, and the
 * worker, which checks a job queued `unchecked`, both take them from here: a check over other bytes would refuse
 * genuine deliveries, or accept forged ones.
 */
export function signedBytesOf(
  raw: Buffer,
  scope: SignedScope,
  notif: () => string | null,
): { bytes: Buffer | string; scope: SignedScope } {
  const decoded = scope === 'notif' ? notif() : null;
  return decoded === null ? { bytes: raw, scope: 'body' } : { bytes: decoded, scope: 'notif' };
}

/**
 * What verification reads of the configuration (its `signature`, src/config/config.ts, which has this shape): the
 * Sellsy protocol does not depend on the configuration module, the configuration depends on it (event patterns).
 */
export interface SignatureSettings {
  signature: {
    check: 'listener' | 'worker';
    keys: readonly string[];
    accountKeys: ReadonlyMap<string, readonly string[]>;
  };
}

export function keysFor(config: SignatureSettings, account: string | null): readonly string[] {
  const own = account === null ? undefined : config.signature.accountKeys.get(account);
  return own ?? config.signature.keys;
}

/** Sellsy account ids are positive integers; 64 digits is far beyond any of them and bounds what is logged. */
const CORPID = /^[1-9][0-9]{0,63}$/;
const PATH_ACCOUNT = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * The account of a delivery: its `corpid`, else the path segment. Refused when both are present and differ
 * (`account_mismatch`) or, with per-account keys, when either is not spelled as an account id (`bad_account`).
 */
export function accountOf(
  config: SignatureSettings,
  pathAccount: string | null | undefined,
  corpId: string | null | undefined,
): { ok: true; account: string | null } | { ok: false; error: 'account_mismatch' | 'bad_account' } {
  const fromPath = pathAccount === undefined || pathAccount === null || pathAccount === '' ? null : pathAccount;
  const fromBody = corpId === undefined || corpId === null || corpId === '' ? null : corpId;
  if (
    config.signature.accountKeys.size > 0 &&
    ((fromBody !== null && !CORPID.test(fromBody)) || (fromPath !== null && !PATH_ACCOUNT.test(fromPath)))
  ) {
    return { ok: false, error: 'bad_account' };
  }
  if (fromPath !== null && fromBody !== null && fromPath !== fromBody) return { ok: false, error: 'account_mismatch' };
  return { ok: true, account: fromBody ?? fromPath };
}

/** The listener's verdict: checked now, carried as `unchecked` (SIGNATURE_CHECK=worker), or `not_configured`. */
export function verifyDelivery(
  config: SignatureSettings,
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
  config: SignatureSettings,
  account: string | null,
  signedBytes: Buffer | string,
  header: string | undefined,
): Verdict {
  const keys = keysFor(config, account);
  if (keys.length === 0) return { ok: false, error: 'unknown_account' };
  if (header === undefined || header === '') return { ok: false, error: 'missing_signature' };
  if (matchSignature(keys, signedBytes, header) < 0) return { ok: false, error: 'bad_signature' };
  // Only once the signature matched: a forged extension carries a valid signature, and an unsigned body is refused
  // as `bad_signature` whatever its bytes.
  if (hasForbiddenBytes(signedBytes)) return { ok: false, error: 'forbidden_bytes' };
  return { ok: true, status: 'verified' };
}
