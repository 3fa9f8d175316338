/**
 * Reference page digests: per logical page and KV head, the per-channel min and max of the keys of its valid
 * tokens, fetched one token at a time. Digest layout (numPages, pageSize / L, numKvHeads, 2, headDim), computed in
 * f32 here; the kernel stores f16 (digestWordsRef models the rounding: min toward -inf, max toward +inf, which is
 * exact for keys that are f16 already, as the cache's are).
 */
import { fromF16Bits, toF16Bits } from '../helpers/sparse-cache.js';
export interface DigestShape {
  pageSize: number;
  logicalPageSize: number;
  numKvHeads: number;
  headDim: number;
}

/** Offset of digests[page][l][head][0][0]. */
export function digestOffset(s: DigestShape, page: number, l: number, head: number): number {
  const lpp = s.pageSize / s.logicalPageSize;
  return ((page * lpp + l) * s.numKvHeads + head) * 2 * s.headDim;
}

/**
 * Writes into `out` the digest of logical page l of physical page `page` over its first `valid` tokens, from
 * k (numPages, pageSize, numKvHeads, headDim) f32. valid == 0 writes zeros.
 */
export function digestRef(
  k: Float32Array,
  s: DigestShape,
  page: number,
  l: number,
  valid: number,
  out: Float32Array,
): void {
  for (let h = 0; h < s.numKvHeads; h++) {
    const o = digestOffset(s, page, l, h);
    for (let d = 0; d < s.headDim; d++) {
      let mn = Number.POSITIVE_INFINITY;
      let mx = Number.NEGATIVE_INFINITY;
      for (let t = 0; t < valid; t++) {
        const slot = l * s.logicalPageSize + t;
        const x = k[((page * s.pageSize + slot) * s.numKvHeads + h) * s.headDim + d];
        mn = Math.min(mn, x);
        mx = Math.max(mx, x);
      }
      out[o + d] = valid ? mn : 0;
      out[o + s.headDim + d] = valid ? mx : 0;
    }
  }
}

/** Digests of every logical page of every sequence of a block table (lens tokens each); other slots NaN. */
export function allDigestsRef(
  k: Float32Array,
  s: DigestShape,
  numPages: number,
  blockTable: Uint32Array,
  maxPagesPerSeq: number,
  lens: number[],
): Float32Array {
  const lpp = s.pageSize / s.logicalPageSize;
  const out = new Float32Array(numPages * lpp * s.numKvHeads * 2 * s.headDim).fill(Number.NaN);
  lens.forEach((len, seq) => {
    for (let g = 0; g * s.logicalPageSize < len; g++) {
      const page = blockTable[seq * maxPagesPerSeq + Math.floor(g / lpp)];
      digestRef(k, s, page, g % lpp, Math.min(s.logicalPageSize, len - g * s.logicalPageSize), out);
    }
  });
  return out;
}

/** The next f16 bit pattern from h toward +inf (dir 1) or -inf (dir -1); +-0 steps to the smallest subnormal. */
function nextF16(h: number, dir: 1 | -1): number {
  if ((h & 0x7fff) === 0) return dir > 0 ? 0x0001 : 0x8001;
  const negative = (h & 0x8000) !== 0;
  return negative === dir > 0 ? h - 1 : h + 1;
}

/** f16 bits of x rounded toward +inf (dir 1) or -inf (dir -1): never below (above) x. NaN stays NaN. */
export function f16Directed(x: number, dir: 1 | -1): number {
  const h = toF16Bits(x);
  const y = fromF16Bits(h);
  if (Number.isNaN(x) || y === x || (dir > 0 ? y > x : y < x)) return h;
  return nextF16(h, dir);
}

/**
 * f32 digests (…, 2, headDim) -> the kernel's f16 words (…, 2, headDim / 2): min halves rounded toward -inf, max
 * halves toward +inf, so Quest's bound from the rounded digest still bounds every key of the page.
 */
export function digestWordsRef(digests: Float32Array, headDim: number): Uint32Array {
  const out = new Uint32Array(digests.length / 2);
  for (let i = 0; i < digests.length; i += 2) {
    const dir = Math.floor(i / headDim) % 2 === 0 ? -1 : 1;
    out[i / 2] = (f16Directed(digests[i], dir) | (f16Directed(digests[i + 1], dir) << 16)) >>> 0;
  }
  return out;
}

/** The kernel's f16 digest words -> f32 values, same element order. */
export function digestValues(words: Uint32Array): Float32Array {
  const out = new Float32Array(words.length * 2);
  for (let i = 0; i < words.length; i++) {
    out[2 * i] = fromF16Bits(words[i] & 0xffff);
    out[2 * i + 1] = fromF16Bits(words[i] >>> 16);
  }
  return out;
}
