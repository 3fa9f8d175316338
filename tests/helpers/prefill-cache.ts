/**
 * Random packed-f16 paged KV caches for the prefill kernels (block_select, block_sparse_attention): several
 * sequences, each with `ctx` cached tokens and a chunk of `fresh` new tokens whose K/V are already written (prefill
 * writes the chunk before attention runs). Pages are shuffled across the pool; every slot no sequence owns (the
 * tail of a last page, spare pages, unused block-table entries) holds f16 NaN, so any read of padding shows up.
 * Cache layout (numPages, pageSize, numKvHeads, headDim / 2) u32: element 2j in the low half, 2j+1 in the high half.
 * `kH` / `vH` view the same bytes as f16 bits (the layout tests/reference/attention.ts takes); `kF` / `vF` are the
 * caches decoded to f32 in (numPages, pageSize, numKvHeads, headDim) order, the values
 * the GPU sees, for the references.
 */
import { f16ToF32, f32ToF16 } from '../../util/dtype.js';
import type { Rng } from './rng.js';

export const F16_NAN = 0x7e00;

export interface PrefillSeq {
  ctx: number; // tokens cached before this chunk
  fresh: number; // chunk length
}

export interface PrefillCache {
  numSeqs: number;
  numPages: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  T: number;
  blockTable: Uint32Array; // (numSeqs, maxPagesPerSeq)
  tokenSeq: Uint32Array; // (T) chunk tokens, each sequence's chunk adjacent, sequences in shuffled order
  positions: Uint32Array; // (T)
  kCache: Uint32Array; // (numPages, pageSize, numKvHeads, headDim / 2) packed f16
  vCache: Uint32Array;
  kH: Uint16Array; // (numPages, pageSize, numKvHeads, headDim) f16 bits, the same bytes as kCache
  vH: Uint16Array;
  kF: Float32Array; // (numPages, pageSize, numKvHeads, headDim) decoded, NaN in unused slots
  vF: Float32Array;
}

/** Index of element 0 of (position j of block-table row seq, KV head kvh) in a decoded cache. */
export function decodedIndex(c: PrefillCache, seq: number, j: number, kvh: number): number {
  const page = c.blockTable[seq * c.maxPagesPerSeq + Math.floor(j / c.pageSize)];
  return ((page * c.pageSize + (j % c.pageSize)) * c.numKvHeads + kvh) * c.headDim;
}

function shuffle<T>(rng: Rng, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

export interface PrefillCacheOptions {
  kvStd?: number;
  /** Custom key of (sequence, position, kvHead) (headDim values); default N(0, kvStd^2). */
  key?: (seq: number, pos: number, kvh: number) => ArrayLike<number>;
  /**
   * A sliding window: cached keys and values older than every chunk token's window (positions < ctx + 1 - window)
   * stay NaN, so a kernel that reads outside the window shows NaN.
   */
  window?: number;
}

export function makePrefillCache(
  rng: Rng,
  seqs: PrefillSeq[],
  shape: { numKvHeads: number; headDim: number; pageSize: number },
  opts: PrefillCacheOptions = {},
): PrefillCache {
  const { numKvHeads, headDim, pageSize } = shape;
  const numSeqs = seqs.length;
  const pagesOf = seqs.map((s) => Math.ceil((s.ctx + s.fresh) / pageSize));
  const maxPagesPerSeq = Math.max(...pagesOf) + 1; // at least one unused entry per row
  const used = pagesOf.reduce((x, y) => x + y, 0);
  const numPages = used + 2;
  const physical = shuffle(
    rng,
    Array.from({ length: numPages }, (_, i) => i),
  );
  const blockTable = new Uint32Array(numSeqs * maxPagesPerSeq).fill(physical[used]); // unused -> a NaN page
  let next = 0;
  seqs.forEach((_, s) => {
    for (let lp = 0; lp < pagesOf[s]; lp++) blockTable[s * maxPagesPerSeq + lp] = physical[next++];
  });
  const words = (numPages * pageSize * numKvHeads * headDim) / 2;
  const kCache = new Uint32Array(words).fill(F16_NAN * 0x10001);
  const vCache = new Uint32Array(words).fill(F16_NAN * 0x10001);
  const c: PrefillCache = {
    numSeqs,
    numPages,
    numKvHeads,
    headDim,
    pageSize,
    maxPagesPerSeq,
    T: 0,
    blockTable,
    tokenSeq: new Uint32Array(0),
    positions: new Uint32Array(0),
    kCache,
    vCache,
    kH: new Uint16Array(kCache.buffer),
    vH: new Uint16Array(vCache.buffer),
    kF: new Float32Array(0),
    vF: new Float32Array(0),
  };
  const kvStd = opts.kvStd ?? 1;
  const put = (cache: Uint32Array, at: number, x: ArrayLike<number>) => {
    for (let d = 0; d < headDim; d += 2) cache[(at + d) / 2] = f32ToF16(x[d]) | (f32ToF16(x[d + 1]) << 16);
  };
  seqs.forEach((sp, s) => {
    const live = opts.window ? Math.max(0, sp.ctx + 1 - opts.window) : 0;
    for (let j = 0; j < sp.ctx + sp.fresh; j++) {
      if (j < live) continue;
      for (let h = 0; h < numKvHeads; h++) {
        const at = decodedIndex(c, s, j, h);
        put(kCache, at, opts.key ? opts.key(s, j, h) : rng.normalArray(headDim, kvStd));
        put(vCache, at, rng.normalArray(headDim));
      }
    }
  });
  const decode = (cache: Uint32Array) => {
    const out = new Float32Array(words * 2);
    for (let i = 0; i < words; i++) {
      out[2 * i] = f16ToF32(cache[i] & 0xffff);
      out[2 * i + 1] = f16ToF32(cache[i] >>> 16);
    }
    return out;
  };
  c.kF = decode(kCache);
  c.vF = decode(vCache);
  const order = shuffle(
    rng,
    seqs.map((_, s) => s),
  );
  const tokens: [number, number][] = [];
  for (const s of order) for (let i = 0; i < seqs[s].fresh; i++) tokens.push([s, seqs[s].ctx + i]);
  c.T = tokens.length;
  c.tokenSeq = Uint32Array.from(tokens.map((x) => x[0]));
  c.positions = Uint32Array.from(tokens.map((x) => x[1]));
  return c;
}
