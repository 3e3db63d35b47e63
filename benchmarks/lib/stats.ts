/** Statistics of the benchmarks: latency percentiles, medians across rounds, and a growable list of samples. */

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** The nearest-rank quantile `q` (0–1) of values sorted in ascending order; NaN when there are none. */
export function nearestRank(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  return n === 0 ? Number.NaN : (sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))] as number);
}

/** Nearest-rank percentiles of latencies in milliseconds (sorts its argument in place). */
export function summarize(values: Float64Array): LatencySummary {
  const n = values.length;
  if (n === 0) return { count: 0, p50: NaN, p90: NaN, p99: NaN, p999: NaN, max: NaN, mean: NaN };
  values.sort();
  const at = (q: number) => nearestRank(values, q);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += values[i] as number;
  return {
    count: n,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    p999: at(0.999),
    max: values[n - 1] as number,
    mean: sum / n,
  };
}

/** An append-only list of doubles without per-sample allocation. */
export class Samples {
  private buf = new Float64Array(1 << 16);
  length = 0;
  push(v: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = v;
  }
  values(): Float64Array {
    return this.buf.slice(0, this.length);
  }
}

/** Median of the finite values (mean of the two middle ones for an even count); NaN if there are none. */
export function median(values: number[]): number {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  const mid = v.length >> 1;
  if (v.length === 0) return NaN;
  return v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}

export const medianOf = <T>(runs: T[], pick: (r: T) => number) => median(runs.map(pick));

export const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
