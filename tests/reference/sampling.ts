/**
 * Reference of the host sampler's distribution (engine/sampler.ts with engine/logits.ts), written the plain way:
 * every step over the whole vocabulary with sorts, in f64. Given one logits row, the tokens generated so far and
 * the prompt, it returns the probability of every token the sampler may draw (vLLM's order: logit_bias, repetition
 * penalty, presence / frequency penalties, mask, temperature, min_p, top-k, top-p).
 */

export interface ReferenceSampling {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  logitBias: Map<number, number>;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  /** Allowed token ids, or null = all. */
  allowed: Set<number> | null;
}

/** (V) f64 probabilities; for temperature 0 a one-hot row at the lowest-id maximum. */
export function referenceDistribution(
  raw: ArrayLike<number>,
  p: ReferenceSampling,
  prompt: number[],
  generated: number[],
): Float64Array {
  const V = raw.length;
  const x = Array.from(raw, (v) => Math.fround(v));
  for (const [id, b] of p.logitBias) x[id] = Math.fround(x[id] + b);
  if (p.repetitionPenalty !== 1) {
    for (const id of new Set([...prompt, ...generated])) {
      x[id] = Math.fround(x[id] > 0 ? x[id] / p.repetitionPenalty : x[id] * p.repetitionPenalty);
    }
  }
  for (const id of new Set(generated)) {
    const n = generated.filter((g) => g === id).length;
    x[id] = Math.fround(x[id] - (n * p.frequencyPenalty + p.presencePenalty));
  }
  const ok = (i: number) => p.allowed === null || p.allowed.has(i);
  const out = new Float64Array(V);
  if (p.temperature === 0) {
    let best = -1;
    for (let i = 0; i < V; i++) if (ok(i) && (best < 0 || x[i] > x[best])) best = i;
    out[best] = 1;
    return out;
  }
  // candidates sorted by logit (ties: lower id first), restricted by the mask and top-k
  let cand = [...Array(V).keys()].filter(ok).sort((a, b) => x[b] - x[a] || a - b);
  if (p.topK > 0) cand = cand.slice(0, p.topK);
  const m = x[cand[0]];
  let w = cand.map((i) => Math.exp((x[i] - m) / p.temperature));
  let z = w.reduce((a, b) => a + b, 0);
  w = w.map((v) => v / z);
  if (p.minP > 0) {
    const cut = p.minP * Math.max(...w);
    w = w.map((v) => (v < cut ? 0 : v));
    z = w.reduce((a, b) => a + b, 0);
    w = w.map((v) => v / z);
  }
  if (p.topP < 1) {
    let cum = 0;
    let keep = w.length;
    for (let i = 0; i < w.length; i++) {
      cum += w[i];
      if (cum >= p.topP) {
        keep = i + 1;
        break;
      }
    }
    cand = cand.slice(0, keep);
    w = w.slice(0, keep);
    z = w.reduce((a, b) => a + b, 0);
    w = w.map((v) => v / z);
  }
  cand.forEach((id, i) => {
    out[id] = w[i];
  });
  return out;
}
