/**
 * The targets of issue 14, decided within one run of `npm run bench` (same machine, same Redis), the listener against
 * `naive`, the design the project started from:
 *   1  Redis frozen 3 s at 300 req/s: p99 ≤ 10 ms, max ≤ 50 ms, 0 lost, 0 duplicated (and no non-2xx, no error or
 *      unanswered request), in 5 runs out of 5 (the freeze scenario, benchmarks/redis-freeze/scenario.ts)
 *   2  acknowledgements per second at saturation (bursts) ≥ 1.0× naive's (stretch 1.5×)
 *   3  jobs per second sustained until the last acknowledged delivery is a job ≥ 0.85× naive's (stretch 1.0×); and
 *      every acknowledged delivery a job (the count settled) in every round
 *   4  p99 at the fixed rate ≤ 1.25× naive's (stretch ≤ 1.0×); no non-2xx answer, error or unanswered request in any
 *      of the listener's fixed-rate runs (their warm-up at the rate included)
 * Ratios 2–4 are computed within each round (./summary.ts computeRatios); the median across rounds decides, printed
 * with its range.
 */
import { f } from '../lib/report.ts';
import { FREEZE_ROUNDS, FREEZE_TARGET, type FreezeRun, freezeVerdict } from '../redis-freeze/scenario.ts';
import type { Measurements } from './measure.ts';
import type { Options } from './options.ts';
import type { RatioSummary } from './summary.ts';

export type Verdict = 'PASS' | 'FAIL' | 'INCOMPLETE' | 'NOT MEASURED';

export interface TargetVerdict {
  target: 1 | 2 | 3 | 4;
  /** What is required, as printed. */
  label: string;
  verdict: Verdict;
  /** Targets 2–4: the stretch goal's verdict. */
  stretch?: { label: string; verdict: Verdict };
  /** Targets 2–4: the ratio (median of the rounds, range, each round's). */
  ratio?: Pick<RatioSummary, 'median' | 'min' | 'max' | 'byRound'>;
  /** What else decided it, as printed. */
  detail: string;
}

const passIf = (ok: boolean): Verdict => (ok ? 'PASS' : 'FAIL');
/** 1 → "1.0×", 0.85 → "0.85×". */
const times = (b: number) => `${Number.isInteger(b) ? b.toFixed(1) : String(b)}×`;

/**
 * A ratio target: `ratio` (missing when not measured) against `bound` and `stretch` (≥ when `atLeast`, else ≤), and
 * `extra.ok`; printed as `what ≥ bound× of`.
 */
function ratioTarget(
  target: 2 | 3 | 4,
  text: { what: string; of: string },
  ratio: RatioSummary | undefined,
  bounds: { bound: number; stretch: number; atLeast: boolean },
  extra: { ok: boolean; detail: string },
): TargetVerdict {
  const sign = bounds.atLeast ? '≥' : '≤';
  const label = `${text.what} ${sign} ${times(bounds.bound)} ${text.of}`;
  const stretchLabel = `stretch ${sign} ${times(bounds.stretch)}`;
  if (ratio === undefined)
    return {
      target,
      label,
      verdict: 'NOT MEASURED',
      stretch: { label: stretchLabel, verdict: 'NOT MEASURED' },
      detail: 'the listener and naive were not both measured in a round (see --targets)',
    };
  const meets = (b: number) => (bounds.atLeast ? ratio.median >= b : ratio.median <= b);
  return {
    target,
    label,
    verdict: passIf(meets(bounds.bound) && extra.ok),
    stretch: { label: stretchLabel, verdict: passIf(meets(bounds.stretch) && extra.ok) },
    ratio: { median: ratio.median, min: ratio.min, max: ratio.max, byRound: ratio.byRound },
    detail: extra.detail,
  };
}

/** The four verdicts; `freeze` is null when the freeze scenario was skipped. */
export function issueTargets(
  m: Measurements,
  opts: Options,
  ratios: Record<string, RatioSummary>,
  freeze: FreezeRun[] | null,
): TargetVerdict[] {
  const verdicts: TargetVerdict[] = [];

  const t1Label = `Redis frozen 3 s at 300 req/s, in ${FREEZE_ROUNDS} runs out of ${FREEZE_ROUNDS}: ${FREEZE_TARGET}`;
  if (freeze === null) {
    verdicts.push({ target: 1, label: t1Label, verdict: 'NOT MEASURED', detail: 'BENCH_FREEZE_ROUNDS=0' });
  } else {
    const v = freezeVerdict(freeze);
    verdicts.push({
      target: 1,
      label: t1Label,
      verdict: v.verdict,
      detail: `met in ${v.met} of ${v.runs} run(s); p99/max while frozen by run, ms: ${v.byRun}`,
    });
  }

  verdicts.push(
    ratioTarget(
      2,
      { what: 'acknowledgements', of: `naive (${opts.burstS} s bursts)` },
      ratios.listenerOverNaiveRps,
      { bound: 1.0, stretch: 1.5, atLeast: true },
      { ok: true, detail: '' },
    ),
  );

  const listenerSat = m.saturation.filter((r) => r.target === 'listener');
  const settled = listenerSat.filter((r) => r.sustained?.settled).length;
  verdicts.push(
    ratioTarget(
      3,
      { what: 'sustained jobs/s', of: 'naive' },
      ratios.listenerOverNaiveJobs,
      { bound: 0.85, stretch: 1.0, atLeast: true },
      {
        ok: listenerSat.length > 0 && settled === listenerSat.length,
        detail: `every acknowledged delivery a job in ${settled}/${listenerSat.length} round(s)`,
      },
    ),
  );

  const listenerFix = m.fixedRate.filter((r) => r.target === 'listener');
  const failed = listenerFix.reduce((n, r) => n + r.all.non2xx + r.all.errors + r.all.unfinished, 0);
  verdicts.push(
    ratioTarget(
      4,
      { what: `p99 at ${opts.rate} req/s`, of: "naive's" },
      ratios.listenerOverNaiveP99,
      { bound: 1.25, stretch: 1.0, atLeast: false },
      { ok: listenerFix.length > 0 && failed === 0, detail: `non-2xx, errors or unanswered: ${failed}` },
    ),
  );

  // The inbox's condition: each job exists within 10 ms of its delivery (p99, every fixed-rate round).
  const lags = listenerFix.flatMap((r) => (r.moveLag !== null && r.moveLag.count > 0 ? [r.moveLag] : []));
  const lagLabel = `the job within p99 ≤ 10 ms of the delivery's receipt at ${opts.rate} req/s`;
  verdicts.push(
    lags.length === 0
      ? { target: 4, label: lagLabel, verdict: 'NOT MEASURED', detail: 'no listener fixed-rate run' }
      : {
          target: 4,
          label: lagLabel,
          verdict: lags.length === listenerFix.length && lags.every((l) => l.p99 <= 10) ? 'PASS' : 'FAIL',
          detail: `p99/max by round, ms: ${lags.map((l) => `${f(l.p99)}/${f(l.max)}`).join(', ')} (${lags.map((l) => l.count).join(', ')} jobs)`,
        },
  );
  return verdicts;
}

/** The "Targets (issue 14)" block; `disturbed`: runs of the ingest phases during which foreign load was high. */
export function verdictReport(verdicts: TargetVerdict[], disturbed: { runs: number; of: number }): string[] {
  const out = ['Targets (issue 14): the listener against naive (the original design) in this run'];
  for (const v of verdicts) {
    let line = `  target ${v.target} ${v.label}: ${v.verdict}`;
    if (v.ratio) {
      const n = v.ratio.byRound.filter((r) => r !== null).length;
      line += `  median ${f(v.ratio.median)}× (range ${f(v.ratio.min)}–${f(v.ratio.max)} over ${n} round${n === 1 ? '' : 's'})`;
    }
    if (v.stretch) line += `; ${v.stretch.label}: ${v.stretch.verdict}`;
    if (v.detail) line += `; ${v.detail}`;
    out.push(line);
  }
  out.push(
    '  Ratios within each round, median decides. 2: 2xx ÷ burst time. 3: acknowledged ÷ time from the burst start until the',
  );
  out.push(
    '  last job was in Redis (job count polled, spool drained). 4: latency from intended start, open loop. 1: the freeze table.',
  );
  if (disturbed.runs > 0)
    out.push(
      `  CAUTION: ${disturbed.runs} of ${disturbed.of} ingest runs were disturbed by foreign load (see Warnings): the verdicts may say more about the machine than the code.`,
    );
  return out;
}
