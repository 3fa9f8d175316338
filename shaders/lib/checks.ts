/**
 * Shape checks and limits shared by every kernel wrapper. Each failure is SiftError('INTERNAL') whose message starts
 * with the kernel and names the binding or value at fault, e.g.
 *   `attention: binding q holds 256 bytes, needs 512 for (2, 4, 16) f32`
 *   `sparse_decode: numHeads 6 is not a multiple of numKvHeads 4`
 */
import { SiftError } from '../../config/errors.js';
import type { BufferRange, KernelBinding } from '../runtime.js';

/** Largest head dim the attention kernels are specialised for (private / workgroup arrays of headDim / 2 pairs). */
export const MAX_HEAD_DIM = 256;
/** Most KV heads a per-head mode table holds (a uniform array<vec4<u32>, 16>: block_select, block_sparse_attention). */
export const MAX_KV_HEADS = 64;
/** Largest index a u32 can hold, plus one: buffers and grids are indexed with u32 in WGSL. */
export const U32_LIMIT = 2 ** 32;

/**
 * Bytes a binding covers: the whole buffer, or a range of one (its size, or the rest of the buffer), or a pool's
 * slabs together (shaders/lib/slabs.ts).
 */
export function bindingBytes(b: KernelBinding): number {
  if ('slabs' in b) return b.bytes;
  if ('mapState' in b) return b.size;
  return b.size ?? b.buffer.size - ((b as BufferRange).offset ?? 0);
}

/** Throws `${kernel}: ${what}` unless `ok`. */
export function check(kernel: string, ok: boolean, what: string): void {
  if (!ok) throw new SiftError('INTERNAL', `${kernel}: ${what}`);
}

/** Throws unless every named value is an integer >= its minimum (default 0). */
export function requireInts(kernel: string, values: Record<string, number>, min: Record<string, number> = {}): void {
  for (const [k, v] of Object.entries(values)) {
    const lo = min[k] ?? 0;
    check(kernel, Number.isInteger(v) && v >= lo, `${k}=${v} must be an integer >= ${lo}`);
  }
}

/** Throws unless `v` is a finite number. */
export function requireFinite(kernel: string, name: string, v: number): void {
  check(kernel, Number.isFinite(v), `${name}=${v} must be finite`);
}

/** Throws unless binding `name` covers at least `bytes` bytes; `shape` (e.g. "(T, 4, 64) f32") says what it holds. */
export function requireBytes(kernel: string, name: string, b: KernelBinding, bytes: number, shape?: string): void {
  const have = bindingBytes(b);
  check(kernel, have >= bytes, `binding ${name} holds ${have} bytes, needs ${bytes}${shape ? ` for ${shape}` : ''}`);
}

/** Throws unless `count` items can be indexed with u32 in WGSL. */
export function requireU32(kernel: string, what: string, count: number): void {
  check(kernel, count < U32_LIMIT, `${what} = ${count} exceeds u32 indexing`);
}

/** Attention head shape: integers, numKvHeads in [1, maxKvHeads] dividing numHeads, headDim even in [2, MAX_HEAD_DIM]. */
export function requireHeads(
  kernel: string,
  a: { numHeads: number; numKvHeads: number; headDim: number },
  maxKvHeads = Number.POSITIVE_INFINITY,
): void {
  requireInts(
    kernel,
    { numHeads: a.numHeads, numKvHeads: a.numKvHeads, headDim: a.headDim },
    { numHeads: 1, numKvHeads: 1 },
  );
  check(kernel, a.numKvHeads <= maxKvHeads, `numKvHeads ${a.numKvHeads} > ${maxKvHeads}`);
  check(
    kernel,
    a.numHeads % a.numKvHeads === 0,
    `numHeads ${a.numHeads} is not a multiple of numKvHeads ${a.numKvHeads}`,
  );
  requireHeadDim(kernel, a.headDim);
}

/** headDim even (the f16 cache packs pairs) and in [2, MAX_HEAD_DIM]. */
export function requireHeadDim(kernel: string, headDim: number): void {
  check(
    kernel,
    Number.isInteger(headDim) && headDim >= 2 && headDim % 2 === 0 && headDim <= MAX_HEAD_DIM,
    `headDim ${headDim} must be even (the cache packs f16 pairs) and in [2, ${MAX_HEAD_DIM}]`,
  );
}

/**
 * A query head range [qHeadOffset, qHeadOffset + numHeads) of q/out rows of qRowHeads heads (retrieval heads come
 * first after the head permutation). Defaults: offset 0, rows of exactly the range.
 */
export function headRange(
  kernel: string,
  numHeads: number,
  qHeadOffset = 0,
  qRowHeads = qHeadOffset + numHeads,
): { qHeadOffset: number; qRowHeads: number } {
  check(
    kernel,
    Number.isInteger(qHeadOffset) &&
      qHeadOffset >= 0 &&
      Number.isInteger(qRowHeads) &&
      qHeadOffset + numHeads <= qRowHeads,
    `head range [${qHeadOffset}, ${qHeadOffset + numHeads}) does not fit rows of ${qRowHeads} heads`,
  );
  return { qHeadOffset, qRowHeads };
}

/**
 * A KV head range [kvHeadOffset, kvHeadOffset + numKvHeads) of k/v activation rows of kvRowHeads heads; returns the
 * rows' length and the range's first pair, in f32 pairs.
 */
export function kvHeadRange(
  kernel: string,
  numKvHeads: number,
  headDim: number,
  kvHeadOffset = 0,
  kvRowHeads = kvHeadOffset + numKvHeads,
): { kvHeadOffset: number; kvRowHeads: number; rowPairs: number; firstPair: number } {
  check(
    kernel,
    Number.isInteger(kvHeadOffset) &&
      kvHeadOffset >= 0 &&
      Number.isInteger(kvRowHeads) &&
      kvHeadOffset + numKvHeads <= kvRowHeads,
    `KV head range [${kvHeadOffset}, ${kvHeadOffset + numKvHeads}) does not fit rows of ${kvRowHeads} heads`,
  );
  return { kvHeadOffset, kvRowHeads, rowPairs: (kvRowHeads * headDim) / 2, firstPair: (kvHeadOffset * headDim) / 2 };
}

/** The two layouts of the attention kernels: 'lanes' (CPU adapters) and 'workgroup' (GPUs). */
export type LayoutVariant = 'workgroup' | 'lanes';

/** A kernel's layout: the one chosen, else 'lanes' on CPU adapters (gpu.caps.isCpu) and 'workgroup' elsewhere. */
export function defaultVariant(caps: { isCpu: boolean }, chosen?: LayoutVariant): LayoutVariant {
  return chosen ?? (caps.isCpu ? 'lanes' : 'workgroup');
}
