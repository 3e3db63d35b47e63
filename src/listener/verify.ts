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
import type { Config } from '../config/config.ts';
import type { HttpErrorCode } from '../errors.ts';
import { rawBytesOf, type SignatureStatus, type WebhookJobData } from '../queue/contract.ts';
import { parseDelivery } from '../sellsy/payload.ts';
import { hasForbiddenBytes, matchSignature } from '../sellsy/signature.ts';

export type Verdict = { ok: true; status: SignatureStatus } | { ok: false; error: HttpErrorCode };

export function keysFor(config: Config, account: string | null): readonly string[] {
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
  config: Config,
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
  if (matchSignature(keys, signedBytes, header) < 0) return { ok: false, error: 'bad_signature' };
  // Only once the signature matched: a forged extension carries a valid signature, and an unsigned body is refused
  // as `bad_signature` whatever its bytes.
  if (hasForbiddenBytes(signedBytes)) return { ok: false, error: 'forbidden_bytes' };
  return { ok: true, status: 'verified' };
}

/** Deferred signature mode: the checks the listener left to the worker (account, signature, bytes), or null. */
export function deferredRefusal(config: Config, data: WebhookJobData): HttpErrorCode | null {
  if (data.signature.status !== 'unchecked') return null;
  // The job's account is its corpid when the payload has one, else the URL's account segment.
  const corpId = data.event?.corpId ?? null;
  const owner = accountOf(config, corpId === null || corpId === '' ? data.account : null, corpId);
  if (!owner.ok) return owner.error;
  const raw = rawBytesOf(data);
  const signed =
    data.signature.scope === 'notif' ? (parseDelivery(raw, data.contentType ?? undefined).notif ?? raw) : raw;
  const verdict = checkSignature(config, owner.account, signed, data.signature.header ?? undefined);
  return verdict.ok ? null : verdict.error;
}
