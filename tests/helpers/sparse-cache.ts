/**
 * f16 paged KV caches for the sparse-attention tests, in the cache format of the kernels: per layer kCache and
 * vCache (numPages, pageSize, numKvHeads, headDim / 2) u32 words of packed f16 pairs (element 2j low half, 2j+1
 * high half), plus f32 mirrors of the same f16 values for the references. Slots no sequence owns hold f16 NaN, so
 * a kernel that reads padding, unused slots past a sequence's end or unselected pages shows NaN.
 */
import type { Slabs } from '../../shaders/lib/slabs.js';
import type { Gpu } from '../../shaders/runtime.js';
/** f32 -> IEEE half bits (round to nearest even) and back: the project's one conversion (shaders/tensor.ts). */
import { f16ToF32 as fromF16Bits, f32ToF16 as toF16Bits } from '../../util/dtype.js';
import type { Rng } from './rng.js';
import { poolOf } from './slabs.js';

export { fromF16Bits, toF16Bits };

/** x rounded to the nearest f16. */
export function roundF16(x: number): number {
  return fromF16Bits(toF16Bits(x));
}

export interface SparseCacheShape {
  numKvHeads: number;
  headDim: number; // even
  pageSize: number;
}

/** One layer's f16 cache and its f32 mirrors. */
export interface SparseCache extends SparseCacheShape {
  numPages: number;
  kWords: Uint32Array; // (numPages, pageSize, numKvHeads, headDim / 2) packed f16 pairs
  vWords: Uint32Array;
  k: Float32Array; // (numPages, pageSize, numKvHeads, headDim) the same f16 values as f32 (NaN where unused)
  v: Float32Array;
}

const NAN_PAIR = 0x7e007e00;

/** A cache of `numPages` pages holding only NaN. */
export function emptyCache(numPages: number, shape: SparseCacheShape): SparseCache {
  const n = numPages * shape.pageSize * shape.numKvHeads * shape.headDim;
  return {
    ...shape,
    numPages,
    kWords: new Uint32Array(n / 2).fill(NAN_PAIR),
    vWords: new Uint32Array(n / 2).fill(NAN_PAIR),
    k: new Float32Array(n).fill(Number.NaN),
    v: new Float32Array(n).fill(Number.NaN),
  };
}

/** Element offset of (page, slot, head, 0) in the f32 mirrors. */
export function slotOffset(c: SparseCacheShape, page: number, slot: number, head: number): number {
  return ((page * c.pageSize + slot) * c.numKvHeads + head) * c.headDim;
}

/** Stores `vals` (headDim, rounded to f16) as the key or value of (page, slot, head). */
export function writeSlot(
  c: SparseCache,
  which: 'k' | 'v',
  page: number,
  slot: number,
  head: number,
  vals: ArrayLike<number>,
): void {
  const off = slotOffset(c, page, slot, head);
  const mirror = which === 'k' ? c.k : c.v;
  const words = which === 'k' ? c.kWords : c.vWords;
  for (let d = 0; d < c.headDim; d += 2) {
    const lo = toF16Bits(vals[d]);
    const hi = toF16Bits(vals[d + 1]);
    words[(off + d) / 2] = (lo | (hi << 16)) >>> 0;
    mirror[off + d] = fromF16Bits(lo);
    mirror[off + d + 1] = fromF16Bits(hi);
  }
}

/** Fills every slot of `page` (all heads) with NaN. */
export function poisonPage(c: SparseCache, page: number): void {
  const n = c.pageSize * c.numKvHeads * c.headDim;
  const off = page * n;
  c.kWords.fill(NAN_PAIR, off / 2, (off + n) / 2);
  c.vWords.fill(NAN_PAIR, off / 2, (off + n) / 2);
  c.k.fill(Number.NaN, off, off + n);
  c.v.fill(Number.NaN, off, off + n);
}

/** Fills one slot of `page` (all heads, key and value) with NaN. */
export function poisonSlot(c: SparseCache, page: number, slot: number): void {
  const n = c.numKvHeads * c.headDim;
  const off = (page * c.pageSize + slot) * n;
  c.kWords.fill(NAN_PAIR, off / 2, (off + n) / 2);
  c.vWords.fill(NAN_PAIR, off / 2, (off + n) / 2);
  c.k.fill(Number.NaN, off, off + n);
  c.v.fill(Number.NaN, off, off + n);
}

function shuffle<T>(rng: Rng, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

/** Sequences of the given lengths on shuffled physical pages, with spare NaN pages. */
export interface PagedSeqs extends SparseCache {
  lens: number[];
  numSeqs: number;
  maxPagesPerSeq: number;
  blockTable: Uint32Array; // (numSeqs, maxPagesPerSeq); unused entries point at a NaN page
}

export function makeSeqCache(
  rng: Rng,
  lens: number[],
  shape: SparseCacheShape,
  opts: { keyStd?: number; extraPages?: number } = {},
): PagedSeqs {
  const { pageSize, numKvHeads, headDim } = shape;
  const pagesOf = lens.map((l) => Math.ceil(l / pageSize));
  const maxPagesPerSeq = Math.max(...pagesOf) + 1 + (opts.extraPages ?? 0);
  const used = pagesOf.reduce((a, b) => a + b, 0);
  const numPages = used + 2;
  const physical = shuffle(
    rng,
    Array.from({ length: numPages }, (_, i) => i),
  );
  const blockTable = new Uint32Array(lens.length * maxPagesPerSeq).fill(physical[used]);
  let next = 0;
  lens.forEach((_, s) => {
    for (let lp = 0; lp < pagesOf[s]; lp++) blockTable[s * maxPagesPerSeq + lp] = physical[next++];
  });
  const c = emptyCache(numPages, shape);
  const kStd = opts.keyStd ?? 1;
  lens.forEach((len, s) => {
    for (let j = 0; j < len; j++) {
      const page = blockTable[s * maxPagesPerSeq + Math.floor(j / pageSize)];
      for (let h = 0; h < numKvHeads; h++) {
        writeSlot(c, 'k', page, j % pageSize, h, rng.normalArray(headDim, kStd));
        writeSlot(c, 'v', page, j % pageSize, h, rng.normalArray(headDim));
      }
    }
  });
  return { ...c, lens, numSeqs: lens.length, maxPagesPerSeq, blockTable };
}

/** Uploads the packed caches. */
/** The caches on the GPU: one buffer each, or `slabs` slabs of whole pages each (shaders/lib/slabs.ts). */
export function uploadCache(
  gpu: Gpu,
  c: SparseCache,
  slabs = 1,
): { kCache: Slabs | GPUBuffer; vCache: Slabs | GPUBuffer } {
  const pageBytes = c.pageSize * c.numKvHeads * c.headDim * 2;
  return {
    kCache: poolOf(gpu, 'k-cache', c.kWords, pageBytes, slabs),
    vCache: poolOf(gpu, 'v-cache', c.vWords, pageBytes, slabs),
  };
}
