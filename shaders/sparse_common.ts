/**
 * Shape helpers shared by the sparse decode kernels (page_digest, page_select, sparse_decode): binding sizes and
 * integer checks that fail with SiftError('INTERNAL') naming the kernel.
 */
import { SiftError } from '../config/errors.js';
import type { Binding, BufferRange } from './runtime.js';

/** Bytes a binding covers (a whole buffer or a range of one). */
export function bindingBytes(b: Binding): number {
  if ('mapState' in b) return b.size;
  return b.size ?? b.buffer.size - ((b as BufferRange).offset ?? 0);
}

/** Throws unless every named value is an integer >= its minimum (default 0). */
export function requireInts(kernel: string, values: Record<string, number>, min: Record<string, number> = {}): void {
  for (const [k, v] of Object.entries(values)) {
    const lo = min[k] ?? 0;
    if (!Number.isInteger(v) || v < lo) {
      throw new SiftError('INTERNAL', `${kernel}: ${k}=${v} must be an integer >= ${lo}`);
    }
  }
}

/** Throws unless `b` covers at least `bytes` bytes. */
export function requireBytes(kernel: string, name: string, b: Binding, bytes: number, shape: string): void {
  const have = bindingBytes(b);
  if (have < bytes) {
    throw new SiftError('INTERNAL', `${kernel}: ${name} binding has ${have} bytes, needs ${bytes} for ${shape}`);
  }
}

/** Throws unless `x` holds. */
export function check(kernel: string, ok: boolean, what: string): void {
  if (!ok) throw new SiftError('INTERNAL', `${kernel}: ${what}`);
}

/** Words of one decode row of the `rows` buffer: (blockRow, position, slot, pages kept) u32. */
export const DECODE_ROW_WORDS = 4;
