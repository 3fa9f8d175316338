/**
 * What the attention kernel wrappers share: the GQA and paging fields their WGSL `struct Params` start with, and the
 * shape checks every one of them makes.
 */
import type { Binding, KernelBinding } from '../runtime.js';
import { check, requireBytes, requireFinite, requireHeads } from './checks.js';
import { type CacheShape, requireCache } from './paged.js';

/** struct Params fields of GQA heads (query heads processed, KV heads, query heads per KV head); values: heads(). */
export const HEADS = { nHeads: 'u32', nKvHeads: 'u32', group: 'u32' } as const;
/** HEADS followed by the paging fields of a block-table kernel; values: pagedHeads(). */
export const PAGED_HEADS = { ...HEADS, pageSize: 'u32', maxPagesPerSeq: 'u32' } as const;

export interface HeadShape {
  /** Query heads processed. */
  numHeads: number;
  /** KV heads of the cache; divides numHeads (GQA: query head h reads KV head h / (numHeads / numKvHeads)). */
  numKvHeads: number;
}

/** The shape arguments of a paged attention kernel over one layer's cache, read through a block table. */
export interface AttentionShape extends HeadShape {
  /** Even (the cache packs f16 pairs), 2..MAX_HEAD_DIM. */
  headDim: number;
  /** Tokens per cache page. */
  pageSize: number;
  /** Block table row length. */
  maxPagesPerSeq: number;
  /** Softmax scale, usually 1 / sqrt(headDim). */
  scale: number;
}

/** How a layer modifies its attention scores: a sliding window and Gemma 2's logit soft-cap. */
export interface ScoreMods {
  /**
   * Sliding window of the layer: a query at position t attends to keys t - window < j <= t (window keys counting its
   * own, HF's sliding_attention); 0 or absent = full causal attention.
   */
  window?: number;
  /** Attention logit soft-cap: a scaled score s becomes softcap * tanh(s / softcap); 0 or absent = none. */
  softcap?: number;
}

/** struct Params fields of ScoreMods; values: scoreMods(). */
export const SCORE_MODS = { window: 'u32', softcap: 'f32' } as const;

/** The checked values of SCORE_MODS (window a non-negative integer, softcap finite and >= 0). */
export function scoreMods(kernel: string, a: ScoreMods): { window: number; softcap: number } {
  const window = a.window ?? 0;
  const softcap = a.softcap ?? 0;
  check(
    kernel,
    Number.isInteger(window) && window >= 0 && window < 2 ** 32,
    `window=${window} must be an integer >= 0`,
  );
  check(kernel, Number.isFinite(softcap) && softcap >= 0, `softcap=${softcap} must be finite and >= 0`);
  return { window, softcap };
}

/** The values of HEADS for a kernel's shape arguments. */
export function heads(a: HeadShape): { nHeads: number; nKvHeads: number; group: number } {
  return { nHeads: a.numHeads, nKvHeads: a.numKvHeads, group: a.numHeads / a.numKvHeads };
}

/** The values of PAGED_HEADS for a kernel's shape arguments. */
export function pagedHeads(a: HeadShape & { pageSize: number; maxPagesPerSeq: number }) {
  return { ...heads(a), pageSize: a.pageSize, maxPagesPerSeq: a.maxPagesPerSeq };
}

/**
 * The checks of an attention kernel: heads (GQA, headDim even and <= MAX_HEAD_DIM, at most maxKvHeads KV heads), a
 * finite softmax scale, and the K (and V) cache bindings (whole pages, the same in both). Returns the cache's pages.
 */
export function requireAttention(
  kernel: string,
  a: HeadShape & CacheShape & { scale: number },
  kCache: KernelBinding,
  vCache?: KernelBinding,
  maxKvHeads?: number,
): number {
  requireHeads(kernel, a, maxKvHeads);
  requireFinite(kernel, 'scale', a.scale);
  return requireCache(kernel, a, kCache, vCache);
}

/** Throws unless binding `name` holds (rows, heads, headDim) f32. */
export function requireRows(
  kernel: string,
  name: string,
  b: Binding,
  rows: number,
  heads: number,
  headDim: number,
): void {
  requireBytes(kernel, name, b, rows * heads * headDim * 4, `(${rows}, ${heads}, ${headDim}) f32`);
}
