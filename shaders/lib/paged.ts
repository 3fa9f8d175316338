/**
 * The paged KV cache as the kernels see it, host side of shaders/lib/paged.wgsl: one layer's K (or V) cache is
 * (numPages, pageSize, numKvHeads, headDim / 2) u32 words of packed f16 pairs (element 2i in the low half), on every
 * adapter (one format, one tested code path). A block table row maps a sequence's page columns to physical pages.
 * A layer's cache may span several buffers (shaders/lib/slabs.ts: slabs of whole pages); the kernels address it in
 * words over the whole pool (kCacheLoad / kCacheStore), so the shapes here are the pool's.
 */
import type { KernelBinding } from '../runtime.js';
import { bindingBytes, check, requireHeadDim, requireInts, U32_LIMIT } from './checks.js';

/** Bytes of one KV cache element: f16. */
export const KV_BYTES_PER_ELEMENT = 2;

/** Bytes one page of one layer's K (or V) cache takes: (pageSize, numKvHeads, headDim) f16. */
export function cachePageBytes(pageSize: number, numKvHeads: number, headDim: number): number {
  return KV_BYTES_PER_ELEMENT * pageSize * numKvHeads * headDim;
}

/** Whole pages held by a cache binding of this layout (a buffer may be padded to 16 bytes). */
export function cachePages(cache: KernelBinding, pageSize: number, numKvHeads: number, headDim: number): number {
  return Math.floor(bindingBytes(cache) / cachePageBytes(pageSize, numKvHeads, headDim));
}

/** The cache layout of a paged kernel: page size and KV heads >= 1, headDim even (f16 pairs). */
export interface CacheShape {
  numKvHeads: number;
  headDim: number;
  pageSize: number;
}

/**
 * Checks the cache shape and the K (and V, when given) cache bindings: whole pages, at least one, the same count in
 * both, u32-indexable in words. Returns the pages they hold.
 */
export function requireCache(kernel: string, s: CacheShape, kCache: KernelBinding, vCache?: KernelBinding): number {
  requireInts(kernel, { numKvHeads: s.numKvHeads, pageSize: s.pageSize }, { numKvHeads: 1, pageSize: 1 });
  requireHeadDim(kernel, s.headDim);
  const pages = cachePages(kCache, s.pageSize, s.numKvHeads, s.headDim);
  const layout = `pages of (${s.pageSize}, ${s.numKvHeads}, ${s.headDim}) f16`;
  check(kernel, pages >= 1, `binding kCache holds ${bindingBytes(kCache)} bytes: not one ${layout}`);
  if (vCache) {
    const v = cachePages(vCache, s.pageSize, s.numKvHeads, s.headDim);
    check(kernel, v === pages, `kCache holds ${pages} and vCache ${v} ${layout}`);
  }
  check(
    kernel,
    (pages * cachePageBytes(s.pageSize, s.numKvHeads, s.headDim)) / 4 < U32_LIMIT,
    `the cache's ${pages} ${layout} exceed u32 indexing`,
  );
  return pages;
}
