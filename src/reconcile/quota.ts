/**
 * The share of Sellsy's per-minute quota a reconcile run (or a backfill) may spend, so that `sellsy-fetch`, which
 * shares the account's quota, keeps working: `RECONCILE_QUOTA_SHARE` of what was left at the start of each minute.
 *
 * Sellsy sends what is left with each answer (`X-Quota-Remaining-By-Minute`, kept by the API client in `api.quota`);
 * it says nothing of when its minute starts, so minutes here are the clock's (`minuteMs` long: tests shorten it).
 * The first call of a minute goes out; its answer says what was left (that figure plus the calls already made this
 * minute), and the minute's budget is `floor(left × share)`, at least 1. Once spent, the next call waits for the next
 * minute. Before any answer carried the header (or when Sellsy never sends it), calls are not held back: the client's
 * own 429 handling still applies.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { SellsyApi } from '../sellsy/api.ts';

const MINUTE_MS = 60_000;

export class QuotaShare {
  #minute = -1;
  #spent = 0;
  #budget: number | null = null;

  constructor(
    private readonly api: Pick<SellsyApi, 'quota'>,
    private readonly share: number,
    private readonly minuteMs = MINUTE_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Before a call: waits for the next minute when this one's budget is spent, then counts the call. */
  async take(signal?: AbortSignal): Promise<void> {
    this.#roll();
    if (this.#budget !== null && this.#spent >= this.#budget) {
      const wait = (this.#minute + 1) * this.minuteMs - this.now();
      if (wait > 0) await sleep(wait, undefined, signal ? { signal } : undefined);
      this.#roll();
    }
    this.#spent++;
  }

  /** After a call's answer: the minute's budget, from the first answer of the minute that carried the quota. */
  observe(): void {
    this.#roll();
    const left = this.api.quota.byMinute;
    if (this.#budget !== null || left === null) return;
    this.#budget = Math.max(1, Math.floor((left + this.#spent) * this.share));
  }

  #roll(): void {
    const minute = Math.floor(this.now() / this.minuteMs);
    if (minute === this.#minute) return;
    this.#minute = minute;
    this.#spent = 0;
    this.#budget = null;
  }
}
