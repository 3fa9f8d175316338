/**
 * How tensors live on the GPU, and the 16-bit conversions shared by the loader, kernels and tests.
 *
 * Activations, norm weights and biases: f32 buffers.
 * 2-D weights (rows, cols), row-major as in HF (out_features, in_features):
 *   - dtype 'f32': f32 elements;
 *   - dtype 'f16' | 'bf16': the checkpoint's 16-bit values kept as they are, packed in pairs into u32 words
 *     (element 2k in the low half, 2k+1 in the high half), converted to f32 inside the kernels
 *     (f16: unpack2x16float; bf16: a 16-bit shift).
 *   Every row is padded with zeros to `rowStride` elements, a multiple of 8 (one vec4<u32> of 16-bit values,
 *   two vec4<f32>), so kernels can use vector loads.
 *   A matrix larger than the adapter's maxStorageBufferBindingSize is split by rows into chunks, each its own
 *   buffer; kernels dispatch once per chunk.
 */
import { SiftError } from '../config/errors.js';
import type { Gpu } from './runtime.js';

export type WeightDType = 'f32' | 'f16' | 'bf16';

export interface WeightChunk {
  /** (rows, rowStride) elements, f32 or packed 16-bit pairs. */
  buffer: GPUBuffer;
  firstRow: number;
  rows: number;
}

export interface GpuWeight {
  name: string;
  dtype: WeightDType;
  rows: number;
  cols: number;
  /** Elements per stored row (cols rounded up to a multiple of 8). */
  rowStride: number;
  chunks: WeightChunk[];
}

export const ROW_ALIGN = 8;

export function bytesPerElement(dtype: WeightDType): number {
  return dtype === 'f32' ? 4 : 2;
}

// ---- 16-bit conversions -------------------------------------------------------------------------------------

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** IEEE half bits -> number. */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** number -> IEEE half bits, round to nearest even. */
export function f32ToF16(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  if ((h & 0x7fff) >= 0x7c00) return sign | 0x7c00;
  return sign | h;
}

/** bfloat16 bits -> number. */
export function bf16ToF32(b: number): number {
  u32buf[0] = (b & 0xffff) << 16;
  return f32buf[0];
}

/** number -> bfloat16 bits, round to nearest even. */
export function f32ToBf16(v: number): number {
  f32buf[0] = v;
  const x = u32buf[0];
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return (x >>> 16) | 0x40;
  const r = x + 0x7fff + ((x >>> 16) & 1);
  return (r >>> 16) & 0xffff;
}

/** Decodes raw little-endian tensor bytes of a checkpoint dtype into f32. */
export function decodeToF32(bytes: Uint8Array, dtype: WeightDType): Float32Array {
  if (dtype === 'f32') {
    const out = new Float32Array(bytes.byteLength / 4);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const n = bytes.byteLength / 2;
  const u16 = new Uint16Array(n);
  new Uint8Array(u16.buffer).set(bytes);
  const out = new Float32Array(n);
  const conv = dtype === 'f16' ? f16ToF32 : bf16ToF32;
  for (let i = 0; i < n; i++) out[i] = conv(u16[i]);
  return out;
}

/** Encodes f32 values into raw little-endian bytes of `dtype` (used by tests to build checkpoints). */
export function encodeFromF32(values: Float32Array, dtype: WeightDType): Uint8Array {
  if (dtype === 'f32')
    return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  const u16 = new Uint16Array(values.length);
  const conv = dtype === 'f16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < values.length; i++) u16[i] = conv(values[i]);
  return new Uint8Array(u16.buffer);
}

// ---- upload ------------------------------------------------------------------------------------------------

/**
 * Uploads a (rows, cols) matrix given as raw checkpoint bytes of `dtype`, padding rows to rowStride and
 * splitting into chunks of at most `maxChunkBytes` (default: the adapter's maxStorageBufferBindingSize).
 */
export function uploadWeight(
  gpu: Gpu,
  name: string,
  dtype: WeightDType,
  rows: number,
  cols: number,
  bytes: Uint8Array,
  maxChunkBytes = gpu.caps.maxStorageBufferBindingSize,
): GpuWeight {
  const bpe = bytesPerElement(dtype);
  if (bytes.byteLength !== rows * cols * bpe) {
    throw new SiftError(
      'CHECKPOINT_INVALID',
      `tensor ${name}: expected ${rows * cols * bpe} bytes for (${rows}, ${cols}) ${dtype}, got ${bytes.byteLength}`,
    );
  }
  const rowStride = Math.ceil(cols / ROW_ALIGN) * ROW_ALIGN;
  const rowBytes = rowStride * bpe;
  const rowsPerChunk = Math.floor(maxChunkBytes / rowBytes);
  if (rowsPerChunk < 1) {
    throw new SiftError(
      'GPU_LIMIT',
      `tensor ${name}: one row (${rowBytes} bytes) exceeds the binding limit ${maxChunkBytes}`,
    );
  }
  const chunks: WeightChunk[] = [];
  for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, rows - r0);
    let data: Uint8Array;
    if (rowStride === cols) {
      data = bytes.subarray(r0 * cols * bpe, (r0 + n) * cols * bpe);
    } else {
      data = new Uint8Array(n * rowBytes);
      for (let r = 0; r < n; r++) {
        data.set(bytes.subarray((r0 + r) * cols * bpe, (r0 + r + 1) * cols * bpe), r * rowBytes);
      }
    }
    const buffer = gpu.upload(`${name}[${r0}:${r0 + n}]`, data);
    chunks.push({ buffer, firstRow: r0, rows: n });
  }
  return { name, dtype, rows, cols, rowStride, chunks };
}

export function destroyWeight(w: GpuWeight): void {
  for (const c of w.chunks) c.buffer.destroy();
}
