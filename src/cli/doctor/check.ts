/**
 * What every doctor check returns, and the deadlines they share.
 */
import { oneLine } from '../format.ts';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  status: CheckStatus;
  /** Stable name: `redis eviction`, `spool disk`… */
  check: string;
  finding: string;
  /** What to do; warn and fail only. */
  fix?: string;
}

/** Longest wait of each network check. */
export const TIMEOUT_MS = 3000;
/** Longest wait for an HTTP service (Sellsy, the forward target), capped by its own configured timeout. */
export const HTTP_TIMEOUT_MS = 5000;

export const ok = (check: string, finding: string): CheckResult => ({ status: 'ok', check, finding });
export const warn = (check: string, finding: string, fix: string): CheckResult => ({
  status: 'warn',
  check,
  finding,
  fix,
});
export const fail = (check: string, finding: string, fix: string): CheckResult => ({
  status: 'fail',
  check,
  finding,
  fix,
});

/** An error in one line, with its cause when the message does not already say it. */
export function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error && !err.message.includes(err.cause.message) ? `: ${err.cause.message}` : '';
  return oneLine(`${err.message}${cause}`, 300);
}
