/**
 * Logits processors of the host sampler, applied to one row of logits (vocab floats) before a token is drawn, in
 * this order (vLLM's): logit_bias, repetition penalty, presence / frequency penalties (sampler.ts), the token mask
 * of a constraint (a grammar); then temperature, min_p, top-k, top-p in the sampler. Each function returns a new
 * row or edits a copy the caller owns; none keeps state.
 *
 * Requests that use any of these need the step's logits row on the host (StepEntry.needsLogits): a device sampler
 * that returns only token ids cannot apply them.
 */
import { SiftError } from '../config/errors.js';

/** A bitmask over the vocabulary: token i is allowed when bit (i & 31) of word (i >> 5) is set. (ceil(V/32)) i32 */
export type TokenMask = Int32Array;

/** True when `mask` allows token `id`. */
export function maskAllows(mask: TokenMask, id: number): boolean {
  return ((mask[id >> 5] >>> (id & 31)) & 1) === 1;
}

/** Number of tokens in [0, vocabSize) the mask allows. */
export function maskCount(mask: TokenMask, vocabSize: number): number {
  let n = 0;
  for (let i = 0; i < vocabSize; i++) if (maskAllows(mask, i)) n++;
  return n;
}

/** logit[id] += bias for every (id, bias) of `bias` (OpenAI logit_bias: -100 bans a token, +100 all but forces it). */
export function applyLogitBias(row: Float32Array, bias: ReadonlyMap<number, number>): void {
  for (const [id, b] of bias) if (id >= 0 && id < row.length) row[id] += b;
}

/**
 * The repetition penalty of CTRL / HF transformers / vLLM, over every token of the sequence so far (prompt and
 * output): a positive logit is divided by `penalty`, a negative one multiplied, so penalty > 1 makes seen tokens
 * less likely, < 1 more likely.
 */
export function applyRepetitionPenalty(row: Float32Array, seen: ReadonlySet<number>, penalty: number): void {
  for (const id of seen) {
    if (id < 0 || id >= row.length) continue;
    row[id] = row[id] > 0 ? row[id] / penalty : row[id] * penalty;
  }
}

/** logit = -Infinity for every token the mask does not allow. Throws when the mask allows no token at all. */
export function applyMask(row: Float32Array, mask: TokenMask): void {
  let any = false;
  for (let i = 0; i < row.length; i++) {
    if (maskAllows(mask, i)) any = true;
    else row[i] = Number.NEGATIVE_INFINITY;
  }
  if (!any) throw new SiftError('INTERNAL', 'the output constraint allows no next token');
}

/**
 * min_p (probabilities `probs` over candidate tokens, already normalised): zero every probability below
 * minP * max(probs) and renormalise in place. minP 0 = off.
 */
export function applyMinP(probs: Float64Array, minP: number): void {
  if (minP <= 0) return;
  let max = 0;
  for (const p of probs) if (p > max) max = p;
  const cut = minP * max;
  let z = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] < cut) probs[i] = 0;
    z += probs[i];
  }
  for (let i = 0; i < probs.length; i++) probs[i] /= z;
}

/** What the host logits processors take from a request. */
export interface LogitsParams {
  /** Token id -> bias added to its logit, each in [-100, 100]. */
  logitBias?: ReadonlyMap<number, number>;
  /** > 0; 1 = off. */
  repetitionPenalty?: number;
  /** In [0, 1]; 0 = off. */
  minP?: number;
}

/**
 * Checks the processors' parameters. SiftError.param is the GenerationRequest field: 'logitBias[<id>]',
 * 'repetitionPenalty', 'minP'.
 */
export function checkLogitsParams(p: LogitsParams, vocabSize: number): void {
  for (const [id, b] of p.logitBias ?? []) {
    const param = `logitBias[${id}]`;
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new SiftError('INVALID_ARGUMENT', `token id ${id} is outside the vocabulary [0, ${vocabSize})`, { param });
    }
    if (!Number.isFinite(b) || b < -100 || b > 100) {
      throw new SiftError('INVALID_ARGUMENT', `a bias must be a number in [-100, 100] (got ${b})`, { param });
    }
  }
  const rp = p.repetitionPenalty;
  if (rp !== undefined && !(Number.isFinite(rp) && rp > 0 && rp <= 10)) {
    throw new SiftError('INVALID_ARGUMENT', `the repetition penalty must be in (0, 10] (got ${rp})`, {
      param: 'repetitionPenalty',
    });
  }
  const mp = p.minP;
  if (mp !== undefined && !(Number.isFinite(mp) && mp >= 0 && mp <= 1)) {
    throw new SiftError('INVALID_ARGUMENT', `min_p must be in [0, 1] (got ${mp})`, { param: 'minP' });
  }
}
