/**
 * Random paged-KV batches for the kv_write and attention tests: several sequences, each with `ctx` tokens already
 * cached and `fresh` new tokens this step (prefill chunk: many; decode: 1), physical pages shuffled across the
 * pool, spare pages and unused block-table entries pointing at pages that hold only NaN, and every cache slot
 * that no sequence owns filled with NaN, so any read of padding shows up as NaN in the output.
 * Caches are f16 bits (Uint16Array, the GPU's packed-pair layout byte for byte); NaN is the f16 quiet NaN 0x7e00.
 */
import { f16ToF32, f32ToF16 } from '../../util/dtype.js';
import type { PagedShape } from '../reference/attention.js';
import type { Rng } from './rng.js';

export interface PagedBatch extends PagedShape {
  numSeqs: number;
  numPages: number;
  /** (numSeqs) tokens already in the cache per sequence, and new tokens this step. */
  ctx: number[];
  fresh: number[];
  blockTable: Uint32Array; // (numSeqs, maxPagesPerSeq)
  tokenSeq: Uint32Array; // (T)
  positions: Uint32Array; // (T)
  /** Caches holding the `ctx` tokens of every sequence, NaN everywhere else. */
  kCache: Uint16Array; // (numPages, pageSize, numKvHeads, headDim) f16 bits
  vCache: Uint16Array;
  /** The new tokens' k, v (T, numKvHeads, headDim). */
  k: Float32Array;
  v: Float32Array;
}

/** The f16 quiet NaN: fills every cache slot no sequence owns. */
export const F16_NAN = 0x7e00;

export interface PagedBatchOptions {
  /** Standard deviation of keys (values are N(0, 1)). Default 1. */
  kvStd?: number;
  /**
   * Round the new tokens' k and v to f16-representable f32 values, so the GPU's f32 -> f16 rounding mode (WGSL
   * lets an implementation round either way) cannot matter. Default false.
   */
  exactF16?: boolean;
  /**
   * A sliding window: cached keys and values older than every new token's window (positions < ctx + 1 - window)
   * stay NaN, so a kernel that reads outside the window shows NaN.
   */
  window?: number;
}

function toF16Bits(xs: Float32Array): Uint16Array {
  const out = new Uint16Array(xs.length);
  for (let i = 0; i < xs.length; i++) out[i] = f32ToF16(xs[i]);
  return out;
}

function roundToF16(xs: Float32Array): Float32Array {
  for (let i = 0; i < xs.length; i++) xs[i] = f16ToF32(f32ToF16(xs[i]));
  return xs;
}

export interface SeqSpec {
  ctx: number;
  fresh: number;
}

function shuffle<T>(rng: Rng, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

export function makePagedBatch(
  rng: Rng,
  seqs: SeqSpec[],
  shape: { numKvHeads: number; headDim: number; pageSize: number },
  opts: PagedBatchOptions = {},
): PagedBatch {
  const kvStd = opts.kvStd ?? 1;
  const { numKvHeads, headDim, pageSize } = shape;
  const numSeqs = seqs.length;
  const pagesOf = seqs.map((s) => Math.ceil((s.ctx + s.fresh) / pageSize));
  const maxPagesPerSeq = Math.max(...pagesOf) + 1; // at least one unused entry per row
  const spare = 2;
  const used = pagesOf.reduce((x, y) => x + y, 0);
  const numPages = used + spare;
  const physical = shuffle(
    rng,
    Array.from({ length: numPages }, (_, i) => i),
  );
  const nanPage = physical[used]; // a spare page: unused block-table entries point here
  const blockTable = new Uint32Array(numSeqs * maxPagesPerSeq).fill(nanPage);
  let next = 0;
  seqs.forEach((_, s) => {
    for (let lp = 0; lp < pagesOf[s]; lp++) blockTable[s * maxPagesPerSeq + lp] = physical[next++];
  });

  const rowLen = numKvHeads * headDim;
  const kCache = new Uint16Array(numPages * pageSize * rowLen).fill(F16_NAN);
  const vCache = new Uint16Array(numPages * pageSize * rowLen).fill(F16_NAN);
  seqs.forEach((sp, s) => {
    const live = opts.window ? Math.max(0, sp.ctx + 1 - opts.window) : 0;
    for (let j = live; j < sp.ctx; j++) {
      const page = blockTable[s * maxPagesPerSeq + Math.floor(j / pageSize)];
      const off = (page * pageSize + (j % pageSize)) * rowLen;
      kCache.set(toF16Bits(rng.normalArray(rowLen, kvStd)), off);
      vCache.set(toF16Bits(rng.normalArray(rowLen)), off);
    }
  });

  const tokens: [seq: number, pos: number][] = [];
  seqs.forEach((sp, s) => {
    for (let i = 0; i < sp.fresh; i++) tokens.push([s, sp.ctx + i]);
  });
  shuffle(rng, tokens); // the kernels must not depend on the order of tokens in the batch
  const T = tokens.length;
  const k = rng.normalArray(T * rowLen, kvStd);
  const v = rng.normalArray(T * rowLen);
  if (opts.exactF16) {
    roundToF16(k);
    roundToF16(v);
  }
  return {
    T,
    numKvHeads,
    headDim,
    pageSize,
    maxPagesPerSeq,
    numSeqs,
    numPages,
    ctx: seqs.map((s) => s.ctx),
    fresh: seqs.map((s) => s.fresh),
    blockTable,
    tokenSeq: Uint32Array.from(tokens.map((x) => x[0])),
    positions: Uint32Array.from(tokens.map((x) => x[1])),
    kCache,
    vCache,
    k,
    v,
  };
}
