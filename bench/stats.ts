/**
 * Measurement helpers shared by the `sift bench` suites: order statistics of repeated timings, KL divergence and
 * greedy agreement of two logits rows (host-side measurement, not model compute), markdown tables.
 */

/** Median and range of repeated measurements. */
export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** Median (mean of the middle two for an even count), min and max. Throws on an empty list. */
export function stat(xs: readonly number[]): Stat {
  if (xs.length === 0) throw new Error('stat: no samples');
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  const median = s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  return { median, min: s[0], max: s[s.length - 1], n: s.length };
}

/** Relative spread (max - min) / median; 0 for a single sample. */
export function relSpread(s: Stat): number {
  return s.median === 0 ? 0 : (s.max - s.min) / s.median;
}

/** Maps each sample of a Stat through a monotone function (e.g. ms -> tokens/s flips min and max). */
export function mapStat(s: Stat, f: (x: number) => number): Stat {
  const a = f(s.min);
  const b = f(s.max);
  return { median: f(s.median), min: Math.min(a, b), max: Math.max(a, b), n: s.n };
}

/** "median (min..max)" with `digits` decimals. */
export function fmtStat(s: Stat, digits = 2): string {
  return `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}..${s.max.toFixed(digits)})`;
}

/** log-softmax in f64. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - lse;
  return out;
}

/** KL(P || Q) in nats, P = softmax(p), Q = softmax(q) over the same vocabulary. */
export function klDivergence(p: ArrayLike<number>, q: ArrayLike<number>): number {
  if (p.length !== q.length) throw new Error(`klDivergence: ${p.length} vs ${q.length} logits`);
  const lp = logSoftmax(p);
  const lq = logSoftmax(q);
  let kl = 0;
  for (let i = 0; i < lp.length; i++) {
    const pi = Math.exp(lp[i]);
    if (pi > 0) kl += pi * (lp[i] - lq[i]);
  }
  return Math.max(0, kl);
}

/** Index of the largest value (first on ties). */
export function argmaxOf(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i;
  return best;
}

export interface Agreement {
  steps: number;
  /** Share of steps whose greedy (argmax) token is the same under both. */
  tokenMatch: number;
  /** Mean and max of KL(reference || other) over the steps, nats. */
  meanKl: number;
  maxKl: number;
}

/** Greedy-token agreement and KL of `other` against `reference`, step by step (rows of equal length). */
export function agreement(reference: readonly ArrayLike<number>[], other: readonly ArrayLike<number>[]): Agreement {
  if (reference.length !== other.length || reference.length === 0) {
    throw new Error(`agreement: ${reference.length} vs ${other.length} steps`);
  }
  let same = 0;
  let sum = 0;
  let max = 0;
  for (let i = 0; i < reference.length; i++) {
    if (argmaxOf(reference[i]) === argmaxOf(other[i])) same++;
    const kl = klDivergence(reference[i], other[i]);
    sum += kl;
    max = Math.max(max, kl);
  }
  return { steps: reference.length, tokenMatch: same / reference.length, meanKl: sum / reference.length, maxKl: max };
}

/** Pools per-document agreements, weighting by steps. */
export function poolAgreement(xs: readonly Agreement[]): Agreement {
  const steps = xs.reduce((a, x) => a + x.steps, 0);
  if (steps === 0) return { steps: 0, tokenMatch: 0, meanKl: 0, maxKl: 0 };
  return {
    steps,
    tokenMatch: xs.reduce((a, x) => a + x.tokenMatch * x.steps, 0) / steps,
    meanKl: xs.reduce((a, x) => a + x.meanKl * x.steps, 0) / steps,
    maxKl: Math.max(...xs.map((x) => x.maxKl)),
  };
}

/** A markdown table. */
export function mdTable(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const line = (cells: readonly (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}
