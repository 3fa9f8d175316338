// Online softmax in f32 (Milakov & Gimelshein; FlashAttention), the one copy every attention kernel uses.
// A running softmax over the keys folded so far is (m, l): m the largest score, l = sum_j exp(s_j - m); the caller's
// accumulator acc = sum_j exp(s_j - m) v_j follows each update with its factors: acc = acc * alpha + p * v.
// Rules (tests/kernels/online_softmax.test.ts):
// - Empty is (m = NEG_BIG, l = 0, acc = 0). NEG_BIG is a finite "minus infinity": with -inf, two empty states would
//   rescale by exp(-inf + inf) = NaN. Real scores must be > NEG_BIG.
// - Only real keys are folded: a masked key is skipped, never folded with a sentinel score (folding NEG_BIG into an
//   empty state would weigh it exp(0) = 1). A tile (lib/tile.wgsl) flags masked slots apart from their scores.
// - A masked or unused slot is never read: a weight of 0 does not keep a NaN out (0 * NaN = NaN). Nothing tests a
//   weight or a score against NaN or 0 to skip it: WGSL may assume NaN absent and fold such tests away.
// - Merging partials (lanes, splits): an empty partial weighs exp(NEG_BIG - M) = 0 against a non-empty one, and
//   all-empty partials merge to empty; softmaxInv(0) = 0, so a row with no keys at all gives 0, never NaN or inf.
// - A NaN score or value reaches the output (NaN in l or acc is never masked), so a read of padding stays visible.

const NEG_BIG: f32 = -3.0e38;
const MASKED_KEY: u32 = 0xffffffffu; // cache offset standing for a masked key: never read, never folded

struct Softmax {
  m: f32,      // largest score so far (NEG_BIG: none)
  l: f32,      // sum of exp(score - m)
  alpha: f32,  // last update: factor the accumulator is rescaled by
  p: f32,      // last update: weight of what was just added (a key's exp(s - m), or a partial's exp(m_i - m))
}

const SOFTMAX_EMPTY = Softmax(NEG_BIG, 0.0, 1.0, 0.0);

// Merges a partial softmax (max mi, sum li): acc = acc * r.alpha + r.p * acc_i after it.
fn softmaxMerge(st: Softmax, mi: f32, li: f32) -> Softmax {
  let m = max(st.m, mi);
  let alpha = exp(st.m - m);
  let p = exp(mi - m);
  return Softmax(m, st.l * alpha + li * p, alpha, p);
}

// Folds one real key of score s (a partial of one key): acc = acc * r.alpha + r.p * v after it.
fn softmaxFold(st: Softmax, s: f32) -> Softmax {
  return softmaxMerge(st, s, 1.0);
}

// Rescales to the max of a tile whose largest score is tmax (NEG_BIG: all masked): acc = acc * r.alpha; then each
// real key of the tile weighs exp(s - r.m), added to l and (times v) to acc.
fn softmaxRescale(st: Softmax, tmax: f32) -> Softmax {
  let m = max(st.m, tmax);
  let alpha = exp(st.m - m);
  return Softmax(m, st.l * alpha, alpha, 0.0);
}

// Weight of a partial of max mi in a merge of max gm (partials merged in two passes: max first, then weights).
fn softmaxWeight(mi: f32, gm: f32) -> f32 {
  return exp(mi - gm);
}

// 1 / l, or 0 when nothing was folded (l = 0): the output of a row with no keys is 0.
fn softmaxInv(l: f32) -> f32 {
  return select(0.0, 1.0 / l, l > 0.0);
}

// Attention logit soft-capping (Gemma 2): cap * tanh(s / cap) of a scaled score s, applied before the softmax;
// cap = 0: none. tanh saturates to +-1 in f32 long before |x| = 15, and the clamp keeps an exp-based tanh finite.
fn softcap(s: f32, cap: f32) -> f32 {
  if (cap <= 0.0) { return s; }
  return cap * tanh(clamp(s / cap, -15.0, 15.0));
}
