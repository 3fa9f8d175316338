/**
 * Reference page digests: per logical page and KV head, the per-channel min and max of the keys of its valid
 * tokens, fetched one token at a time. Digest layout (numPages, pageSize / L, numKvHeads, 2, headDim) f32.
 */
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
