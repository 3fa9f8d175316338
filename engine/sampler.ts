/**
 * Token sampling from one row of logits: greedy, temperature, min_p, top-k, top-p, seeded, after the logits
 * processors (logits.ts: logit_bias, repetition penalty, then OpenAI presence / frequency penalties over the tokens
 * generated so far, then a constraint's token mask), and logprobs (log-softmax of the raw logits).
 * Runs on the host over the logits row the forward pass reads back (vocab floats per sequence per step).
 * Same seed and same logits -> same tokens: each request owns its Sampler, so its random stream does not depend on
 * what else shares the batch.
 */
import { SiftError } from '../config/errors.js';
import {
  applyLogitBias,
  applyMask,
  applyMinP,
  applyRepetitionPenalty,
  type LogitsParams,
  type TokenMask,
} from './logits.js';

export interface SamplingParams {
  /** 0 = greedy (argmax). */
  temperature: number;
  /** Keep the k most likely tokens; 0 = off. */
  topK: number;
  /** Keep the smallest set whose probability reaches p; 1 = off. */
  topP: number;
  /** Seed of this request's random stream; null = random. */
  seed: number | null;
}

export const DEFAULT_SAMPLING: SamplingParams = Object.freeze({ temperature: 1, topK: 0, topP: 1, seed: null });

export function validateSampling(p: SamplingParams): void {
  const bad = (param: string, why: string) => new SiftError('INVALID_ARGUMENT', `${param} ${why}`, { param });
  if (!Number.isFinite(p.temperature) || p.temperature < 0 || p.temperature > 100)
    throw bad('temperature', 'must be in [0, 100]');
  if (!Number.isInteger(p.topK) || p.topK < 0) throw bad('top_k', 'must be an integer >= 0');
  if (!Number.isFinite(p.topP) || p.topP <= 0 || p.topP > 1) throw bad('top_p', 'must be in (0, 1]');
  if (p.seed !== null && !Number.isSafeInteger(p.seed)) throw bad('seed', 'must be an integer');
}

/** A small, fast, seedable generator (SplitMix32-seeded xoshiro128**). */
export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(seed: number) {
    let s = (seed >>> 0) ^ Math.floor(seed / 4294967296);
    const next = () => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
  }
  /** Uniform in [0, 1). */
  next(): number {
    const r = Math.imul((Math.imul(this.b, 5) << 7) | (Math.imul(this.b, 5) >>> 25), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = (this.d << 11) | (this.d >>> 21);
    return r / 4294967296;
  }
}

export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > bv) {
      bv = logits[i];
      best = i;
    }
  }
  return best;
}

/** Indices of the k largest values, largest first (k <= length). */
function topKIndices(logits: ArrayLike<number>, k: number): number[] {
  if (k >= logits.length) {
    const all = Array.from({ length: logits.length }, (_, i) => i);
    return all.sort((x, y) => logits[y] - logits[x] || x - y);
  }
  // min-heap of size k
  const heap: number[] = [];
  const less = (i: number, j: number) => logits[i] < logits[j] || (logits[i] === logits[j] && i > j);
  const up = (n: number) => {
    while (n > 0) {
      const p = (n - 1) >> 1;
      if (!less(heap[n], heap[p])) break;
      [heap[n], heap[p]] = [heap[p], heap[n]];
      n = p;
    }
  };
  const down = (n: number) => {
    for (;;) {
      const l = 2 * n + 1;
      const r = l + 1;
      let m = n;
      if (l < heap.length && less(heap[l], heap[m])) m = l;
      if (r < heap.length && less(heap[r], heap[m])) m = r;
      if (m === n) break;
      [heap[n], heap[m]] = [heap[m], heap[n]];
      n = m;
    }
  };
  for (let i = 0; i < logits.length; i++) {
    if (heap.length < k) {
      heap.push(i);
      up(heap.length - 1);
    } else if (less(heap[0], i)) {
      heap[0] = i;
      down(0);
    }
  }
  return heap.sort((x, y) => logits[y] - logits[x] || x - y);
}

/** OpenAI penalties, each in [-2, 2]; 0 = off. */
export interface PenaltyParams {
  /** Subtracted once from the logit of every token generated at least once. */
  presencePenalty: number;
  /** Subtracted from a token's logit per time it was generated. */
  frequencyPenalty: number;
}

export function validatePenalties(p: PenaltyParams): void {
  for (const [param, v] of [
    ['presence_penalty', p.presencePenalty],
    ['frequency_penalty', p.frequencyPenalty],
  ] as const) {
    if (!Number.isFinite(v) || v < -2 || v > 2)
      throw new SiftError('INVALID_ARGUMENT', `${param} must be in [-2, 2]`, { param });
  }
}

/**
 * OpenAI's penalties: logit[t] -= count[t] * frequency + (count[t] > 0) * presence, over the counts of the tokens
 * generated so far (not the prompt). Returns a new row; `logits` is left as it was.
 */
export function applyPenalties(
  logits: ArrayLike<number>,
  counts: ReadonlyMap<number, number>,
  p: PenaltyParams,
): Float32Array {
  const out = Float32Array.from(logits);
  for (const [id, n] of counts) {
    if (n > 0 && id >= 0 && id < out.length) out[id] -= n * p.frequencyPenalty + p.presencePenalty;
  }
  return out;
}

/** One token's log-probability. */
export interface Logprob {
  id: number;
  logprob: number;
}

/**
 * Log-softmax of `logits` (the raw row, before penalties and temperature) at `chosen`, plus the `topN` most likely
 * tokens, most likely first (ties: lower id first). Computed in f64 on the host.
 */
export function tokenLogprobs(
  logits: ArrayLike<number>,
  chosen: number,
  topN: number,
): { logprob: number; top: Logprob[] } {
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > m) m = logits[i];
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i] - m);
  const lse = m + Math.log(z);
  const top =
    topN > 0 ? topKIndices(logits, Math.min(topN, logits.length)).map((id) => ({ id, logprob: logits[id] - lse })) : [];
  return { logprob: logits[chosen] - lse, top };
}

/** The sampler of one request: owns its random stream and the counts of the tokens it generated. */
export class Sampler {
  private readonly rng: SeededRandom;
  readonly penalties: PenaltyParams;
  /** Generated token id -> times generated (see `accept`). */
  readonly counts = new Map<number, number>();
  /** Prompt and generated token ids (for the repetition penalty; empty when it is off). */
  private readonly seen = new Set<number>();
  private readonly logits: LogitsParams;

  /** `prompt`: the prompt's ids, which the repetition penalty counts as seen. */
  constructor(
    readonly params: SamplingParams,
    penalties: Partial<PenaltyParams> = {},
    logits: LogitsParams = {},
    prompt: readonly number[] = [],
  ) {
    validateSampling(params);
    this.penalties = {
      presencePenalty: penalties.presencePenalty ?? 0,
      frequencyPenalty: penalties.frequencyPenalty ?? 0,
    };
    validatePenalties(this.penalties);
    this.logits = logits;
    if (this.repetition) for (const id of prompt) this.seen.add(id);
    this.rng = new SeededRandom(params.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  private get repetition(): boolean {
    return this.logits.repetitionPenalty !== undefined && this.logits.repetitionPenalty !== 1;
  }

  /** Records a generated token for the penalties. */
  accept(id: number): void {
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    if (this.repetition) this.seen.add(id);
  }

  /** The row after the logits processors (logits.ts), or `raw` itself when none applies. */
  processed(raw: ArrayLike<number>, mask?: TokenMask): ArrayLike<number> {
    const pen = this.penalties;
    const bias = this.logits.logitBias;
    const penalize = this.counts.size > 0 && (pen.presencePenalty !== 0 || pen.frequencyPenalty !== 0);
    if (!penalize && !mask && !this.repetition && !(bias && bias.size > 0)) return raw;
    const row = Float32Array.from(raw);
    if (bias) applyLogitBias(row, bias);
    if (this.repetition) applyRepetitionPenalty(row, this.seen, this.logits.repetitionPenalty as number);
    if (penalize) {
      for (const [id, n] of this.counts) {
        if (n > 0 && id >= 0 && id < row.length) row[id] -= n * pen.frequencyPenalty + pen.presencePenalty;
      }
    }
    if (mask) applyMask(row, mask);
    return row;
  }

  /**
   * Samples from `rawLogits` after the logits processors; `mask` (a constraint's allowed tokens) leaves only the
   * tokens it allows. Draws exactly one random number per call, so a seeded request's stream does not depend on
   * how many tokens a mask allowed.
   */
  sample(rawLogits: ArrayLike<number>, mask?: TokenMask): number {
    const logits = this.processed(rawLogits, mask);
    const p = this.params;
    const u = this.rng.next();
    if (p.temperature === 0) return argmax(logits);
    const minP = this.logits.minP ?? 0;
    const k = p.topK > 0 ? Math.min(p.topK, logits.length) : p.topP < 1 ? logits.length : 0;
    let ids: number[] | null = null;
    let probs: Float64Array;
    const invT = 1 / p.temperature;
    if (k > 0) {
      ids = topKIndices(logits, k);
      const m = logits[ids[0]];
      probs = new Float64Array(ids.length);
      let z = 0;
      for (let i = 0; i < ids.length; i++) z += probs[i] = Math.exp((logits[ids[i]] - m) * invT);
      for (let i = 0; i < ids.length; i++) probs[i] /= z;
      applyMinP(probs, minP);
      if (p.topP < 1) {
        let cum = 0;
        let keep = ids.length;
        for (let i = 0; i < ids.length; i++) {
          cum += probs[i];
          if (cum >= p.topP) {
            keep = i + 1;
            break;
          }
        }
        ids = ids.slice(0, keep);
        probs = probs.slice(0, keep);
        let z2 = 0;
        for (const q of probs) z2 += q;
        for (let i = 0; i < probs.length; i++) probs[i] /= z2;
      }
    } else {
      let m = -Infinity;
      for (let i = 0; i < logits.length; i++) if (logits[i] > m) m = logits[i];
      probs = new Float64Array(logits.length);
      let z = 0;
      for (let i = 0; i < logits.length; i++) z += probs[i] = Math.exp((logits[i] - m) * invT);
      for (let i = 0; i < logits.length; i++) probs[i] /= z;
      applyMinP(probs, minP);
    }
    let cum = 0;
    for (let i = 0; i < probs.length; i++) {
      cum += probs[i];
      if (u < cum) return ids ? ids[i] : i;
    }
    // rounding: the last token with nonzero probability
    for (let i = probs.length - 1; i >= 0; i--) if (probs[i] > 0) return ids ? ids[i] : i;
    return ids ? ids[0] : argmax(logits);
  }
}
