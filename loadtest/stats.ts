/** Summary statistics of latency samples: percentiles by linear interpolation between closest ranks. */

/** n, mean, min, max and p50/p90/p99 of a sample; every figure null when the sample is empty. */
export interface Summary {
  n: number;
  mean: number | null;
  min: number | null;
  max: number | null;
  p50: number | null;
  p90: number | null;
  p99: number | null;
}

/**
 * The p-th percentile (p in [0, 100]) of `sorted` (ascending), interpolating linearly between the two closest
 * ranks (numpy's default, Hyndman-Fan type 7): rank = p/100 * (n - 1). null for an empty array.
 */
export function percentileSorted(sorted: readonly number[], p: number): number | null {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile ${p} is outside [0, 100]`);
  const n = sorted.length;
  if (n === 0) return null;
  const rank = (p / 100) * (n - 1);
  const lo = Math.floor(rank);
  const hi = Math.min(lo + 1, n - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

/** The p-th percentile of an unsorted sample (copies and sorts it). */
export function percentile(xs: readonly number[], p: number): number | null {
  return percentileSorted(
    [...xs].sort((a, b) => a - b),
    p,
  );
}

export function summarize(xs: readonly number[]): Summary {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return { n: 0, mean: null, min: null, max: null, p50: null, p90: null, p99: null };
  let sum = 0;
  for (const x of s) sum += x;
  return {
    n: s.length,
    mean: sum / s.length,
    min: s[0],
    max: s[s.length - 1],
    p50: percentileSorted(s, 50),
    p90: percentileSorted(s, 90),
    p99: percentileSorted(s, 99),
  };
}

/**
 * The fewest samples a percentile is shown from: below 10 samples p90 is just the second-largest value or an
 * interpolation towards the largest, below 100 p99 is the largest; the reports leave those out (report.json keeps them).
 */
export const MIN_SAMPLES = { p50: 1, p90: 10, p99: 100 } as const;

/** The percentile of a summary when it has enough samples to mean something (MIN_SAMPLES), else null. */
export function shownPercentile(s: Summary, p: keyof typeof MIN_SAMPLES): number | null {
  return s.n >= MIN_SAMPLES[p] ? s[p] : null;
}
