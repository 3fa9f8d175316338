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
 *   - dtype 'q8' | 'q4': sift's quantized layouts (util/quant.ts), values packed 8 to a block (two u32 words of
 *     int8 / one u32 word of u4 per block, rows padded to rowStride), plus per chunk a scales buffer of
 *     (chunkRows, groupsPerRow) group scales (q4: (scale, min) pairs), f16 where every one of them is exactly an
 *     f16 value (q8: two to a word; q4: one pair to a word), else f32. Dequantized inside the kernels
 *     (shaders/lib/dequant.wgsl); no f32 or f16 copy of the weights exists.
 *   A matrix larger than the adapter's maxStorageBufferBindingSize is split by rows into chunks, each its own
 *   buffer; kernels dispatch once per chunk.
 */
import { SiftError } from '../config/errors.js';
import { bytesPerElement, f32ToF16, type WeightDType } from '../util/dtype.js';
import { groupsPerRow, type QuantFormat, type QuantizedMatrix, wordsPerRow } from '../util/quant.js';
import type { Gpu } from './runtime.js';
export interface WeightChunk {
  /** (rows, rowStride) elements, f32 or packed 16-bit pairs; q8 / q4: (rows, rowStride / 8) blocks. */
  buffer: GPUBuffer;
  /** q8 / q4: (rows, groupsPerRow) group scales (q4: with mins), f16 or f32 (GpuWeight.quant.scaleF16). */
  scales?: GPUBuffer;
  firstRow: number;
  rows: number;
}

/** The group layout of a quantized weight. */
export interface QuantLayout {
  /** Columns per scale group (the row length for one group per row). */
  group: number;
  groupsPerRow: number;
  /** 8-element blocks per group (the kernels' divisor). */
  groupBlocks: number;
  scaleF16: boolean;
}

export interface GpuWeight {
  name: string;
  dtype: WeightDType | QuantFormat;
  /** q8 / q4 only. */
  quant?: QuantLayout;
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
  /** Every chunk holds a multiple of this many rows (2 for interleaved gate/up pairs). */
  rowMultiple = 1,
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
  const rowsPerChunk = Math.floor(maxChunkBytes / rowBytes / rowMultiple) * rowMultiple;
  if (rowsPerChunk < 1) {
    throw new SiftError(
      'GPU_LIMIT',
      `tensor ${name}: ${rowMultiple} row(s) of ${rowBytes} bytes exceed the binding limit ${maxChunkBytes}`,
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

/**
 * Uploads a quantized matrix (util/quant.ts) as it is: values, and per chunk its rows' scales (f16 when
 * m.scaleF16). Chunks hold whole rows and stay under `maxChunkBytes`.
 */
export function uploadQuantized(
  gpu: Gpu,
  name: string,
  m: QuantizedMatrix,
  maxChunkBytes = gpu.caps.maxStorageBufferBindingSize,
  /** Every chunk holds a multiple of this many rows (2 for interleaved gate/up pairs). */
  rowMultiple = 1,
): GpuWeight {
  const { rows, cols } = m;
  const wpr = wordsPerRow(m.format, cols);
  const gpr = groupsPerRow(cols, m.group);
  if (m.group % ROW_ALIGN !== 0 && m.group < cols) {
    throw new SiftError('INTERNAL', `tensor ${name}: scale groups of ${m.group} columns split 8-element blocks`);
  }
  const rowBytes = wpr * 4;
  const rowsPerChunk = Math.floor(maxChunkBytes / rowBytes / rowMultiple) * rowMultiple;
  if (rowsPerChunk < 1) {
    throw new SiftError(
      'GPU_LIMIT',
      `tensor ${name}: ${rowMultiple} row(s) of ${rowBytes} bytes exceed the binding limit ${maxChunkBytes}`,
    );
  }
  const chunks: WeightChunk[] = [];
  for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, rows - r0);
    const values = m.values.subarray(r0 * wpr, (r0 + n) * wpr);
    const buffer = gpu.upload(`${name}[${r0}:${r0 + n}]`, values);
    const scales = gpu.upload(`${name}.scales[${r0}:${r0 + n}]`, packScales(m, r0 * gpr, n * gpr));
    chunks.push({ buffer, scales, firstRow: r0, rows: n });
  }
  const groupBlocks = m.group >= cols ? Math.ceil(cols / ROW_ALIGN) : m.group / ROW_ALIGN;
  return {
    name,
    dtype: m.format,
    quant: { group: Math.min(m.group, cols), groupsPerRow: gpr, groupBlocks, scaleF16: m.scaleF16 },
    rows,
    cols,
    rowStride: m.rowStride,
    chunks,
  };
}

/** Groups [g0, g0 + n) of the scales (and mins) as the kernels read them. */
function packScales(m: QuantizedMatrix, g0: number, n: number): Uint32Array | Float32Array {
  const mins = m.mins;
  if (!m.scaleF16) {
    if (!mins) return m.scales.slice(g0, g0 + n);
    const out = new Float32Array(2 * n);
    for (let i = 0; i < n; i++) {
      out[2 * i] = m.scales[g0 + i];
      out[2 * i + 1] = mins[g0 + i];
    }
    return out;
  }
  if (mins) {
    const out = new Uint32Array(n);
    for (let i = 0; i < n; i++) out[i] = (f32ToF16(m.scales[g0 + i]) | (f32ToF16(mins[g0 + i]) << 16)) >>> 0;
    return out;
  }
  const out = new Uint32Array(Math.ceil(n / 2));
  for (let i = 0; i < n; i++) out[i >> 1] |= f32ToF16(m.scales[g0 + i]) << ((i & 1) * 16);
  return out;
}

/** Bytes the weight occupies on the GPU (values and scales). */
export function weightBytes(w: GpuWeight): number {
  return w.chunks.reduce((a, c) => a + c.buffer.size + (c.scales?.size ?? 0), 0);
}

export function destroyWeight(w: GpuWeight): void {
  for (const c of w.chunks) {
    c.buffer.destroy();
    c.scales?.destroy();
  }
}
