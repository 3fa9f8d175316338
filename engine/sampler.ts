/**
 * Token sampling: greedy, temperature, min_p, top-k, top-p, seeded, after the logits processors (logits.ts:
 * logit_bias, repetition penalty, OpenAI presence / frequency penalties over the tokens generated so far, a
 * constraint's token mask), and logprobs (log-softmax of the raw logits).
 *
 * Each request owns a Sampler: per step it draws the step's uniform number from the request's seeded stream and
 * turns logit_bias and its penalties into one sparse logit bias (`nextStep`, a SampleSpec of model/executor.ts). The
 * executor samples on the device with that spec (shaders/sample.wgsl); `sampleLogits` is the same rule on the host,
 * for requests that need host-side logits (a repetition penalty, min_p, a constraint's mask: `sampleWith` applies
 * them to the row first) and as the device's reference. Same seed and same logits -> same tokens, whatever
 * else shares the batch, on either side (up to the f32 rounding of the device at a cumulative-weight boundary).
 *
 * The host rule costs O(vocab) and sorts nothing above 2048 tokens: the order (logit desc, id asc) is that of the
 * logits' order-preserving u32 keys, and each cut (top-k, top-p, the draw) is a radix search over 16-bit histograms
 * (a full sort of 128256 logits took 65 ms; `sift bench step` reports this rule's time at the model's vocabulary).
 */
import { SiftError } from '../config/errors.js';
import type { LogitBias, SampleSpec } from '../model/executor.js';
import { applyLogitBias, applyMask, applyRepetitionPenalty, type LogitsParams, type TokenMask } from './logits.js';

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

/** Scratch of sampleLogits, grown to the vocabulary once (the host path allocates nothing per step after that). */
const scratch = {
  f: new Float32Array(0),
  bits: new Uint32Array(0), // the bits of f
  keys: new Uint32Array(0),
  w: new Float64Array(0),
  hiMass: new Float64Array(65536),
  hiCount: new Float64Array(65536),
  loMass: new Float64Array(65536),
  loCount: new Float64Array(65536),
};

/** Order-preserving u32 key of an f32's bits: unsigned order = float order (NaN lowest). */
function orderKey(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return 0;
  return (bits & 0x80000000 ? ~bits : bits | 0x80000000) >>> 0;
}

const oneBits = new Uint32Array(1);
const oneF32 = new Float32Array(oneBits.buffer);

/** The f32 value of an order key. */
function keyValue(key: number): number {
  oneBits[0] = key & 0x80000000 ? key & 0x7fffffff : ~key;
  return oneF32[0];
}

/**
 * The tokens a search runs over: every key above `key`, and of the tokens at `key` only the first `ties` in id
 * order (a top-k or top-p cut inside a run of equal logits). null: every token.
 */
type Floor = { key: number; ties: number } | null;

/** Where a cumulative sum in (key desc, id asc) order crosses its target: the key, the sum above it, the tie rank. */
interface Crossing {
  key: number;
  /** Sum of the tokens above `key`. */
  above: number;
  /** 1-based rank among the tokens at `key` (id order) of the token where the sum crosses. */
  rank: number;
  /** Weight of one token at `key`. */
  tieW: number;
}

/**
 * Radix search over the order keys, 16 bits at a time (two passes): the first position in (key desc, id asc) order
 * whose inclusive cumulative weight (`w`, or 1 per token when null) exceeds `target` (strict) or reaches it. Past
 * the end (rounding), the last token of the set.
 */
function search(
  V: number,
  w: Float64Array | null,
  floor: Floor,
  target: number,
  strict: boolean,
  weightOf: (key: number) => number,
): Crossing {
  const { keys, hiMass, hiCount, loMass, loCount } = scratch;
  const cross = (x: number) => (strict ? x > target : x >= target);
  const fk = floor ? floor.key : 0;
  const fw = floor ? floor.ties * (w ? weightOf(floor.key) : 1) : 0;
  hiMass.fill(0);
  hiCount.fill(0);
  for (let i = 0; i < V; i++) {
    const k = keys[i];
    if (floor && k <= fk) continue; // the floor's ties are added as a whole below
    const h = k >>> 16;
    hiMass[h] += w ? w[i] : 1;
    hiCount[h]++;
  }
  if (floor) {
    hiMass[fk >>> 16] += fw;
    hiCount[fk >>> 16] += floor.ties;
  }
  let acc = 0;
  let H = -1;
  let lowest = -1;
  for (let h = 65535; h >= 0; h--) {
    if (hiCount[h] === 0) continue;
    lowest = h;
    if (cross(acc + hiMass[h])) {
      H = h;
      break;
    }
    acc += hiMass[h];
  }
  const pastEnd = H < 0;
  if (pastEnd) {
    H = lowest;
    acc -= hiMass[H];
  }
  loMass.fill(0);
  loCount.fill(0);
  for (let i = 0; i < V; i++) {
    const k = keys[i];
    if (k >>> 16 !== H || (floor && k <= fk)) continue;
    const l = k & 0xffff;
    loMass[l] += w ? w[i] : 1;
    loCount[l]++;
  }
  if (floor && fk >>> 16 === H) {
    loMass[fk & 0xffff] += fw;
    loCount[fk & 0xffff] += floor.ties;
  }
  let L = -1;
  let lowL = -1;
  for (let l = 65535; l >= 0; l--) {
    if (loCount[l] === 0) continue;
    lowL = l;
    if (!pastEnd && cross(acc + loMass[l])) {
      L = l;
      break;
    }
    acc += loMass[l];
  }
  if (L < 0) {
    L = lowL;
    acc -= loMass[L];
  }
  const key = ((H << 16) | L) >>> 0;
  const ties = loCount[L];
  const tieW = w ? weightOf(key) : 1;
  let rank = ties;
  if (!pastEnd && L >= 0 && tieW > 0) {
    const x = (target - acc) / tieW;
    rank = strict ? Math.floor(x) + 1 : Math.ceil(x);
    rank = Math.min(ties, Math.max(1, rank));
  }
  return { key, above: acc, rank, tieW };
}

/** The id of the rank-th (1-based) token with order key `key`, in id order. */
function nthWithKey(V: number, key: number, rank: number): number {
  const keys = scratch.keys;
  let seen = 0;
  let last = -1;
  for (let i = 0; i < V; i++) {
    if (keys[i] !== key) continue;
    last = i;
    if (++seen === rank) return i;
  }
  return last;
}

/** Vocabularies up to this size sort the whole row (cheaper than the radix searches' 64K-bin histograms). */
const SORT_BELOW = 2048;

/** The top-k / top-p rule by a full sort (small vocabularies). */
function sampleSorted(
  f: Float32Array,
  spec: Omit<SampleSpec, 'returnLogits' | 'onHost'>,
  m: number,
  k: number,
): number {
  const V = f.length;
  const invT = 1 / spec.temperature;
  let ids = Array.from({ length: V }, (_, i) => i).sort((x, y) => f[y] - f[x] || x - y);
  if (k > 0) ids = ids.slice(0, k);
  const w = ids.map((i) => Math.exp((f[i] - m) * invT) || 0);
  let z = 0;
  if (k > 0) for (const x of w) z += x;
  else for (let i = 0; i < V; i++) z += Math.exp((f[i] - m) * invT) || 0;
  let keep = ids.length;
  if (spec.topP < 1) {
    let cum = 0;
    for (let i = 0; i < ids.length; i++) {
      cum += w[i];
      if (cum >= spec.topP * z) {
        keep = i + 1;
        break;
      }
    }
    z = 0;
    for (let i = 0; i < keep; i++) z += w[i];
  }
  const target = spec.u * z;
  let cum = 0;
  for (let i = 0; i < keep; i++) {
    cum += w[i];
    if (target < cum) return ids[i];
  }
  for (let i = keep - 1; i >= 0; i--) if (w[i] > 0) return ids[i];
  return ids[0];
}

/** The step's logits row with the bias added (a copy), or the row itself without one. */
function withBias(logits: ArrayLike<number>, bias: LogitBias | undefined): ArrayLike<number> {
  if (!bias || bias.ids.length === 0) return logits;
  const out = Float32Array.from(logits);
  for (let i = 0; i < bias.ids.length; i++) {
    const id = bias.ids[i];
    if (id >= 0 && id < out.length) out[id] += bias.deltas[i];
  }
  return out;
}

/**
 * Samples one token from a raw logits row by the rule of SampleSpec (model/executor.ts), in f64: the host path and
 * the reference of the device sampler, which runs the same searches (shaders/sample.wgsl). Returns a token id.
 *
 * Without top-k / top-p: one cumulative pass in id order. With them, no sort: the order (logit desc, id asc) is
 * that of the logits' order-preserving u32 keys, and each cut is a radix search for the position where a
 * cumulative count or weight crosses a target (two passes of 16-bit histograms): top-k by count (k), top-p by
 * weight within the top-k set (topP of its weight), the token by weight within the kept set (u of its weight).
 */
export function sampleLogits(raw: ArrayLike<number>, spec: Omit<SampleSpec, 'returnLogits' | 'onHost'>): number {
  const logits = withBias(raw, spec.bias);
  if (spec.temperature === 0) return argmax(logits);
  const V = logits.length;
  const invT = 1 / spec.temperature;
  if (scratch.f.length < V) {
    scratch.f = new Float32Array(V);
    scratch.bits = new Uint32Array(scratch.f.buffer);
    scratch.keys = new Uint32Array(V);
    scratch.w = new Float64Array(V);
  }
  const { f, bits, keys, w } = scratch;
  let m = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < V; i++) {
    f[i] = logits[i];
    if (f[i] > m) m = f[i];
  }
  const weight = (x: number) => Math.exp((x - m) * invT) || 0; // NaN logits weigh nothing
  const k = spec.topK > 0 ? Math.min(spec.topK, V) : 0;
  if (k === 0 && spec.topP >= 1) {
    // every token, in id order
    let z = 0;
    for (let i = 0; i < V; i++) z += w[i] = weight(f[i]);
    const target = spec.u * z;
    let cum = 0;
    for (let i = 0; i < V; i++) {
      cum += w[i];
      if (target < cum) return i;
    }
    for (let i = V - 1; i >= 0; i--) if (w[i] > 0) return i; // rounding: the last token with weight
    return argmax(logits);
  }
  if (V <= SORT_BELOW) return sampleSorted(f.subarray(0, V), spec, m, k);
  for (let i = 0; i < V; i++) keys[i] = orderKey(bits[i]);
  const weightOf = (key: number) => weight(keyValue(key));
  let floor: Floor = null;
  let z = 0;
  if (k > 0 && k < V) {
    const c = search(V, null, null, k, false, weightOf);
    floor = { key: c.key, ties: c.rank };
    for (let i = 0; i < V; i++) {
      w[i] = keys[i] > c.key ? weight(f[i]) : 0;
      z += w[i];
    }
    z += c.rank * weightOf(c.key);
  } else {
    for (let i = 0; i < V; i++) z += w[i] = weight(f[i]);
  }
  if (spec.topP < 1) {
    const c = search(V, w, floor, spec.topP * z, false, weightOf);
    floor = { key: c.key, ties: c.rank };
    z = c.above + c.rank * c.tieW;
  }
  const c = search(V, w, floor, spec.u * z, true, weightOf);
  return nthWithKey(V, c.key, c.rank);
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

  /**
   * Whether this request's rule needs the logits row on the host: a repetition penalty (it scales logits by their
   * sign) or min_p. logit_bias and the presence / frequency penalties are a sparse additive bias the device applies.
   */
  get hostOnly(): boolean {
    return this.repetition || (this.logits.minP ?? 0) > 0;
  }

  /** Records a generated token for the penalties. */
  accept(id: number): void {
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    if (this.repetition) this.seen.add(id);
  }

  /**
   * logit_bias and the penalties over the tokens generated so far as one sparse logit bias (distinct ids; undefined
   * when none applies).
   */
  bias(): LogitBias | undefined {
    const pen = this.penalties;
    const penalize = this.counts.size > 0 && (pen.presencePenalty !== 0 || pen.frequencyPenalty !== 0);
    const lb = this.logits.logitBias;
    if (!penalize && !(lb && lb.size > 0)) return undefined;
    const delta = new Map<number, number>(lb ?? []);
    if (penalize) {
      for (const [id, n] of this.counts) {
        if (n > 0) delta.set(id, (delta.get(id) ?? 0) - (n * pen.frequencyPenalty + pen.presencePenalty));
      }
    }
    const ids = new Uint32Array(delta.size);
    const deltas = new Float32Array(delta.size);
    let i = 0;
    for (const [id, d] of delta) {
      ids[i] = id;
      deltas[i++] = d;
    }
    return { ids, deltas };
  }

  /**
   * This step's sampling: the parameters, one uniform draw from the request's stream (none for greedy, so the
   * stream advances once per sampled token), the bias, and whether the host must sample it (hostOnly).
   */
  nextStep(): SampleSpec {
    const p = this.params;
    const spec: SampleSpec = {
      temperature: p.temperature,
      topK: p.topK,
      topP: p.topP,
      u: p.temperature === 0 ? 0 : this.rng.next(),
      bias: this.bias(),
    };
    if (this.hostOnly) spec.onHost = true;
    return spec;
  }

  /**
   * The row after the logits processors (logits.ts), in vLLM's order: logit_bias, repetition penalty, presence /
   * frequency penalties, a constraint's mask; then min_p as a floor under the logits (a token whose weight is below
   * minP times the largest is left out: -Infinity). `raw` itself when none applies.
   */
  processed(raw: ArrayLike<number>, mask?: TokenMask): ArrayLike<number> {
    const pen = this.penalties;
    const bias = this.logits.logitBias;
    const penalize = this.counts.size > 0 && (pen.presencePenalty !== 0 || pen.frequencyPenalty !== 0);
    const minP = this.params.temperature > 0 ? (this.logits.minP ?? 0) : 0;
    if (!penalize && !mask && !this.repetition && !(bias && bias.size > 0) && minP <= 0) return raw;
    const row = Float32Array.from(raw);
    if (bias) applyLogitBias(row, bias);
    if (this.repetition) applyRepetitionPenalty(row, this.seen, this.logits.repetitionPenalty as number);
    if (penalize) {
      for (const [id, n] of this.counts) {
        if (n > 0 && id >= 0 && id < row.length) row[id] -= n * pen.frequencyPenalty + pen.presencePenalty;
      }
    }
    if (mask) applyMask(row, mask);
    if (minP > 0) {
      let m = Number.NEGATIVE_INFINITY;
      for (const x of row) if (x > m) m = x;
      // weight exp((x - m) / T) >= minP * exp(0)  <=>  x >= m + T ln(minP)
      const cut = m + this.params.temperature * Math.log(minP);
      for (let i = 0; i < row.length; i++) if (row[i] < cut) row[i] = Number.NEGATIVE_INFINITY;
    }
    return row;
  }

  /**
   * Samples this step's token on the host with the step's spec (its draw): the device's rule on the raw row when no
   * host-only rule or mask applies, else the same rule over the processed row.
   */
  sampleWith(raw: ArrayLike<number>, spec: SampleSpec, mask?: TokenMask): number {
    if (!mask && !this.hostOnly) return sampleLogits(raw, spec);
    return sampleLogits(this.processed(raw, mask), { ...spec, bias: undefined });
  }

  /**
   * Samples from `rawLogits` after the logits processors; `mask` (a constraint's allowed tokens) leaves only the
   * tokens it allows. Draws one random number per call (none for greedy), so a seeded request's stream does not
   * depend on how many tokens a mask allowed.
   */
  sample(rawLogits: ArrayLike<number>, mask?: TokenMask): number {
    return this.sampleWith(rawLogits, this.nextStep(), mask);
  }
}
