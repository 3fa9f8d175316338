/**
 * Page digest wrapper: recomputes the key digests (per-channel min and max) of the logical pages a step touched,
 * from one layer's f16 kCache: digests (numPages, pageSize / logicalPageSize, numKvHeads, 2, headDim) f16 packed in
 * pairs into u32 words like the cache, [page][logical][head][0 = min, 1 = max][d]. Run after kv_write in every step
 * (prefill chunks and decode): the host lists each touched (physical page, logical index, valid tokens) once
 * (`digestEntries`), and the kernel recomputes the whole logical page from the cache.
 *
 * f16 digests lose nothing: the keys are f16, so each min / max is the bit pattern of one of them (the kernel
 * compares and copies raw f16 bits, no float conversion), and Quest's bound computed from it stays an upper bound
 * of q . k over the page. Half the bytes of f32 digests, which page selection reads every reselecting step.
 *
 * Head range: `numKvHeads` is the number of KV heads in this layer's cache (r_l retrieval heads, KV heads [0, r_l)
 * of the permuted layer); the layer's digests then use the layout with numKvHeads heads, a prefix of a buffer
 * sized for the model's full KV heads. numKvHeads = 0 encodes nothing.
 *
 * Why recompute and not update with atomics: one batch may hold several tokens of the same logical page (prefill,
 * or chunked prefill continuing a partial page), so an incremental update would need atomic f32 min/max, which
 * WGSL lacks (it would take compare-exchange loops on order-preserving u32 bit patterns), needs the slot reset to
 * (+inf, -inf) before the first token of a page, and would fold in stale values of a recycled page. Recomputing
 * reads at most logicalPageSize keys per (entry, channel), is deterministic, idempotent, and exact by construction.
 */
import { check, requireBytes, requireInts } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { requireCache } from './lib/paged.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 64;

/** struct Params of page_digest.wgsl. */
const PARAMS = defineParams('page_digest', {
  numEntries: 'u32',
  nKvHeads: 'u32',
  pageSize: 'u32',
  logicalPageSize: 'u32',
  lpp: 'u32',
  numPages: 'u32',
});

export interface PageDigestArgs {
  kCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, one layer
  entries: Binding; // (numEntries, 3) u32 (physical page, logical index within the page, valid tokens 0..L)
  digests: PoolBinding; // (numPages, pageSize / logicalPageSize, numKvHeads, headDim / 2) u32 f16 pairs x2, one layer
  numEntries: number;
  numKvHeads: number; // KV heads in kCache (0: nothing to do)
  headDim: number; // even
  pageSize: number;
  logicalPageSize: number; // divides pageSize
}

export interface PageDigestOptions {
  /** Tests only: caps the grid's x dimension to exercise the 2-D workgroup layout. */
  maxWorkgroupsPerDim?: number;
}

/** Bytes of one layer's digest buffer: (numPages, pageSize / logicalPageSize, numKvHeads, 2, headDim) f16. */
export function digestBytes(
  numPages: number,
  pageSize: number,
  logicalPageSize: number,
  numKvHeads: number,
  headDim: number,
): number {
  return numPages * (pageSize / logicalPageSize) * numKvHeads * 2 * headDim * 2;
}

/** The tokens [start, end) written this step for one sequence, with its block table row (physical pages). */
export interface DigestSpan {
  pages: ArrayLike<number>;
  start: number;
  end: number;
}

/**
 * (numEntries, 3) u32 entries for the logical pages the spans touched: each (physical page, logical index) once,
 * with its valid token count min(L, end - first token of the logical page) (the later span wins on duplicates).
 */
export function digestEntries(spans: DigestSpan[], pageSize: number, logicalPageSize: number): Uint32Array {
  const seen = new Map<number, [number, number, number]>();
  const lpp = pageSize / logicalPageSize;
  for (const s of spans) {
    if (s.end <= s.start) continue;
    const firstLog = Math.floor(s.start / logicalPageSize);
    const lastLog = Math.floor((s.end - 1) / logicalPageSize);
    for (let g = firstLog; g <= lastLog; g++) {
      const page = s.pages[Math.floor(g / lpp)];
      const l = g % lpp;
      const valid = Math.min(logicalPageSize, s.end - g * logicalPageSize);
      seen.set(page * lpp + l, [page, l, valid]);
    }
  }
  const out = new Uint32Array(seen.size * 3);
  let i = 0;
  for (const e of seen.values()) out.set(e, 3 * i++);
  return out;
}

export class PageDigestKernel {
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: PageDigestOptions = {},
  ) {}

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: PageDigestArgs): void {
    const K = 'page_digest';
    requireInts(
      K,
      {
        numEntries: a.numEntries,
        numKvHeads: a.numKvHeads,
        headDim: a.headDim,
        pageSize: a.pageSize,
        logicalPageSize: a.logicalPageSize,
      },
      { headDim: 2, pageSize: 1, logicalPageSize: 1 },
    );
    if (a.numKvHeads === 0) return; // a layer without retrieval heads: no main-pool keys
    check(
      K,
      a.pageSize % a.logicalPageSize === 0,
      `logicalPageSize ${a.logicalPageSize} must divide pageSize ${a.pageSize}`,
    );
    const numPages = requireCache(K, a, a.kCache);
    const lpp = a.pageSize / a.logicalPageSize;
    requireBytes(
      K,
      'digests',
      a.digests,
      digestBytes(numPages, a.pageSize, a.logicalPageSize, a.numKvHeads, a.headDim),
      `(${numPages}, ${lpp}, ${a.numKvHeads}, 2, ${a.headDim}) f16`,
    );
    requireBytes(K, 'entries', a.entries, a.numEntries * 12, `(${a.numEntries}, 3) u32`);
    if (a.numEntries === 0) return;
    const HW = a.headDim / 2;
    const u = arena.params(PARAMS, {
      numEntries: a.numEntries,
      nKvHeads: a.numKvHeads,
      pageSize: a.pageSize,
      logicalPageSize: a.logicalPageSize,
      lpp,
      numPages,
    });
    const [x, y] = grid2d(this.gpu, a.numEntries * a.numKvHeads * HW, WG, this.opts.maxWorkgroupsPerDim);
    const slabs = slabDefines({ kCache: a.kCache, digests: a.digests });
    const pipe = this.gpu.pipeline('page_digest', { HW, ...slabs }, { WG }, PARAMS);
    this.gpu.dispatch(pass, pipe, [a.kCache, a.entries, a.digests, u], x, y);
  }
}
