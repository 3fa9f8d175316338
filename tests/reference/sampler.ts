/**
 * Reference sampler: the rule of SampleSpec (model/executor.ts) written the plain way, with a full sort of the
 * vocabulary whenever top-k or top-p is on, in f64. engine/sampler.ts sampleLogits (bucketed, no full sort) and the
 * device sampler (shaders/sample.wgsl) are held to it.
 */
import type { SampleSpec } from '../../model/executor.js';

export function sampleRef(raw: ArrayLike<number>, spec: Omit<SampleSpec, 'returnLogits' | 'onHost'>): number {
  const logits = Float32Array.from(raw);
  if (spec.bias) for (let i = 0; i < spec.bias.ids.length; i++) logits[spec.bias.ids[i]] += spec.bias.deltas[i];
  const V = logits.length;
  if (spec.temperature === 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  const invT = 1 / spec.temperature;
  let m = Number.NEGATIVE_INFINITY;
  for (const l of logits) m = Math.max(m, l);
  const k = spec.topK > 0 ? Math.min(spec.topK, V) : spec.topP < 1 ? V : 0;
  if (k === 0) {
    const w = Array.from(logits, (l) => Math.exp((l - m) * invT));
    const z = w.reduce((a, b) => a + b, 0);
    let cum = 0;
    for (let i = 0; i < V; i++) {
      cum += w[i];
      if (spec.u * z < cum) return i;
    }
    return V - 1;
  }
  const order = Array.from({ length: V }, (_, i) => i).sort((x, y) => logits[y] - logits[x] || x - y);
  let ids = order.slice(0, k);
  const wAll = Array.from(logits, (l) => Math.exp((l - m) * invT));
  const zk = spec.topK > 0 ? ids.reduce((a, i) => a + wAll[i], 0) : wAll.reduce((a, b) => a + b, 0);
  if (spec.topP < 1) {
    let cum = 0;
    let keep = ids.length;
    for (let i = 0; i < ids.length; i++) {
      cum += wAll[ids[i]] / zk;
      if (cum >= spec.topP) {
        keep = i + 1;
        break;
      }
    }
    ids = ids.slice(0, keep);
  }
  const z = ids.reduce((a, i) => a + wAll[i], 0);
  let cum = 0;
  for (const i of ids) {
    cum += wAll[i];
    if (spec.u * z < cum) return i;
  }
  return ids[ids.length - 1];
}

/**
 * Whether `got` is what the reference gives with the draw or the top-p threshold moved by `eps`: a sampler that sums
 * the weights in another order (the host's radix searches, 1e-9) or in f32 (the device, ~1e-5) may put a draw or a
 * top-p cut that sits on a cumulative-weight boundary on either side; such draws must stay rare.
 */
export function atBoundary(logits: ArrayLike<number>, spec: SampleSpec, got: number, eps = 1e-9): boolean {
  const moved = [
    { ...spec, u: Math.max(0, spec.u - eps) },
    { ...spec, u: Math.min(1 - 1e-12, spec.u + eps) },
    { ...spec, topP: spec.topP - eps },
    { ...spec, topP: Math.min(1, spec.topP + eps) },
  ];
  return moved.some((s) => sampleRef(logits, s) === got);
}
