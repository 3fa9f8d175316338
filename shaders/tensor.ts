/**
 * How weight tensors live on the GPU (the dtype math itself is util/dtype.ts).
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
import { bytesPerElement, type WeightDType } from '../util/dtype.js';
import type { Gpu } from './runtime.js';
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
