/**
 * sift's two quantized weight layouts, host side (plain TS, no WebGPU, no imports): how a quantized matrix is stored, how it
 * is made from f32 weights (round-to-nearest, `--quantize int8|q4`), how it decodes back to f32, and how its rows
 * are permuted. shaders/ uploads the same arrays and dequantizes them inside the matmul kernels.
 *
 * A (rows, cols) matrix is cut, row by row, into groups of `group` consecutive columns (the last group of a row may
 * be shorter when group does not divide cols). Every group has its own scale (and, for q4, its own min):
 *   q8: w = scale[r, g] * q,        q an int8 in [-127, 127] (ggml Q6_K's 6-bit values in [-32, 31] fit too)
 *   q4: w = scale[r, g] * q + min[r, g], q a u4 in [0, 15]
 * so ggml's block formats map onto them exactly (checkpoint/ggml.ts): Q8_0 is q8 with group 32, Q6_K q8 with group
 * 16 and scale d * sc, Q4_0 q4 with group 32 and min -8d, Q4_K q4 with group 32, scale d * sc and min -dmin * m.
 *
 * Values are packed 8 per block into u32 words, rows padded with zero values to `rowStride` (cols rounded up to 8):
 *   q8: two words per block of 8; word k holds elements 4k..4k+3, element 4k+j in byte j (two's complement) —
 *       the byte order of WGSL's unpack4xI8;
 *   q4: one word per block of 8; byte j holds element j in its low nibble and element j + 4 in its high nibble, so
 *       unpack4xU8(w & 0x0f0f0f0f) gives elements 0..3 and unpack4xU8((w >> 4) & 0x0f0f0f0f) elements 4..7.
 * Scales and mins are (rows, groupsPerRow) f32; `scaleF16` says every one of them is exactly an f16 value, so the
 * GPU may store them as f16 without changing a single weight.
 */
import { f16ToF32, f32ToF16 } from './dtype.js';

export type QuantFormat = 'q8' | 'q4';

export interface QuantizedMatrix {
  format: QuantFormat;
  rows: number;
  cols: number;
  /** Columns per scale group (the last group of a row may be shorter). */
  group: number;
  /** cols rounded up to a multiple of 8. */
  rowStride: number;
  /** (rows, rowStride / 4) words (q8) or (rows, rowStride / 8) words (q4), packed as the file comment says. */
  values: Uint32Array;
  /** (rows, groupsPerRow(cols, group)). */
  scales: Float32Array;
  /** (rows, groupsPerRow(cols, group)); q4 only. */
  mins: Float32Array | null;
  /** Every scale and min is exactly representable as f16. */
  scaleF16: boolean;
}

export const QUANT_ROW_ALIGN = 8;

export function groupsPerRow(cols: number, group: number): number {
  return Math.ceil(cols / group);
}

/** u32 words per stored row of `format`. */
export function wordsPerRow(format: QuantFormat, cols: number): number {
  const stride = Math.ceil(cols / QUANT_ROW_ALIGN) * QUANT_ROW_ALIGN;
  return format === 'q8' ? stride / 4 : stride / 8;
}

/** Bytes the matrix occupies on the GPU: values plus scales (and mins), at f16 or f32 per `scaleF16`. */
export function quantizedBytes(q: QuantizedMatrix): number {
  const perScale = q.scaleF16 ? 2 : 4;
  const groups = q.rows * groupsPerRow(q.cols, q.group);
  return q.values.byteLength + groups * perScale * (q.mins ? 2 : 1);
}

/** An empty matrix of `format` (all values zero) for writers to fill. */
export function allocQuantized(format: QuantFormat, rows: number, cols: number, group: number): QuantizedMatrix {
  if (!(Number.isInteger(rows) && rows > 0 && Number.isInteger(cols) && cols > 0)) {
    throw new RangeError(`quantized matrix: bad shape (${rows}, ${cols})`);
  }
  if (!(Number.isInteger(group) && group > 0 && group % QUANT_ROW_ALIGN === 0) && group !== cols) {
    throw new RangeError(`quantized matrix: group ${group} must be a multiple of 8 or the row length`);
  }
  const g = rows * groupsPerRow(cols, group);
  return {
    format,
    rows,
    cols,
    group,
    rowStride: Math.ceil(cols / QUANT_ROW_ALIGN) * QUANT_ROW_ALIGN,
    values: new Uint32Array(rows * wordsPerRow(format, cols)),
    scales: new Float32Array(g),
    mins: format === 'q4' ? new Float32Array(g) : null,
    scaleF16: false,
  };
}

/** Sets the integer value of element (r, c): q8 in [-128, 127], q4 in [0, 15]. */
export function setQuantValue(m: QuantizedMatrix, r: number, c: number, q: number): void {
  const wpr = wordsPerRow(m.format, m.cols);
  if (m.format === 'q8') {
    const w = r * wpr + (c >> 2);
    const shift = (c & 3) * 8;
    m.values[w] = (m.values[w] & ~(0xff << shift)) | ((q & 0xff) << shift);
  } else {
    const w = r * wpr + (c >> 3);
    const k = c & 7;
    const shift = (k & 3) * 8 + (k >= 4 ? 4 : 0);
    m.values[w] = (m.values[w] & ~(0xf << shift)) | ((q & 0xf) << shift);
  }
}

/** The integer value of element (r, c). */
export function quantValue(m: QuantizedMatrix, r: number, c: number): number {
  const wpr = wordsPerRow(m.format, m.cols);
  if (m.format === 'q8') {
    const byte = (m.values[r * wpr + (c >> 2)] >>> ((c & 3) * 8)) & 0xff;
    return byte >= 128 ? byte - 256 : byte;
  }
  const k = c & 7;
  return (m.values[r * wpr + (c >> 3)] >>> ((k & 3) * 8 + (k >= 4 ? 4 : 0))) & 0xf;
}

/** Sets scaleF16 from the scales and mins now stored. */
export function markScaleF16(m: QuantizedMatrix): QuantizedMatrix {
  const exact = (a: Float32Array) => a.every((v) => f16ToF32(f32ToF16(v)) === v);
  m.scaleF16 = exact(m.scales) && (m.mins === null || exact(m.mins));
  return m;
}

/** Decodes to f32 (rows, cols): each weight computed as the kernels do, in f32 (scale * q, then + min). */
export function dequantize(m: QuantizedMatrix): Float32Array {
  const out = new Float32Array(m.rows * m.cols);
  const gpr = groupsPerRow(m.cols, m.group);
  const f = new Float32Array(1);
  for (let r = 0; r < m.rows; r++) {
    for (let c = 0; c < m.cols; c++) {
      const g = r * gpr + Math.floor(c / m.group);
      f[0] = m.scales[g] * quantValue(m, r, c);
      if (m.mins) f[0] += m.mins[g];
      out[r * m.cols + c] = f[0];
    }
  }
  return out;
}

/** The matrix with its rows reordered: row i of the result is row `order[i]` of `m`. */
export function permuteQuantizedRows(m: QuantizedMatrix, order: ArrayLike<number>): QuantizedMatrix {
  if (order.length !== m.rows) {
    throw new RangeError(`permuteQuantizedRows: ${order.length} rows in the order, matrix has ${m.rows}`);
  }
  const wpr = wordsPerRow(m.format, m.cols);
  const gpr = groupsPerRow(m.cols, m.group);
  const out: QuantizedMatrix = {
    ...m,
    values: new Uint32Array(m.values.length),
    scales: new Float32Array(m.scales.length),
    mins: m.mins ? new Float32Array(m.mins.length) : null,
  };
  for (let i = 0; i < m.rows; i++) {
    const src = order[i];
    out.values.set(m.values.subarray(src * wpr, (src + 1) * wpr), i * wpr);
    out.scales.set(m.scales.subarray(src * gpr, (src + 1) * gpr), i * gpr);
    out.mins?.set((m.mins as Float32Array).subarray(src * gpr, (src + 1) * gpr), i * gpr);
  }
  return out;
}

/**
 * Whether column blocks of `blockCols` can move as whole units: whole blocks of 8 values, and no scale group straddling
 * two blocks (groups inside blocks, or one group for the whole row).
 */
export function canPermuteColumnBlocks(m: QuantizedMatrix, blockCols: number): boolean {
  const oneGroup = m.group >= m.cols;
  return blockCols % QUANT_ROW_ALIGN === 0 && (oneGroup || blockCols % m.group === 0);
}

/** The matrix with column blocks of `blockCols` reordered: block i of the result is block `order[i]` of `m`. */
export function permuteQuantizedColumnBlocks(
  m: QuantizedMatrix,
  blockCols: number,
  order: ArrayLike<number>,
): QuantizedMatrix {
  if (blockCols * order.length !== m.cols || !canPermuteColumnBlocks(m, blockCols)) {
    throw new RangeError(
      `permuteQuantizedColumnBlocks: blocks of ${blockCols} columns (x${order.length}) do not fit a (${m.rows}, ${m.cols}) matrix with groups of ${m.group}`,
    );
  }
  const wpr = wordsPerRow(m.format, m.cols);
  const wordsPerBlock = m.format === 'q8' ? blockCols / 4 : blockCols / 8;
  const gpr = groupsPerRow(m.cols, m.group);
  const groupsPerBlock = m.group >= m.cols ? 0 : blockCols / m.group;
  const out: QuantizedMatrix = {
    ...m,
    values: new Uint32Array(m.values.length),
    scales: Float32Array.from(m.scales),
    mins: m.mins ? Float32Array.from(m.mins) : null,
  };
  for (let r = 0; r < m.rows; r++) {
    for (let i = 0; i < order.length; i++) {
      const src = r * wpr + order[i] * wordsPerBlock;
      out.values.set(m.values.subarray(src, src + wordsPerBlock), r * wpr + i * wordsPerBlock);
      if (groupsPerBlock > 0) {
        const gs = r * gpr + order[i] * groupsPerBlock;
        const gd = r * gpr + i * groupsPerBlock;
        out.scales.set(m.scales.subarray(gs, gs + groupsPerBlock), gd);
        out.mins?.set((m.mins as Float32Array).subarray(gs, gs + groupsPerBlock), gd);
      }
    }
  }
  return out;
}

// ---- round-to-nearest quantizers (--quantize) ------------------------------------------------------------------

const f32 = new Float32Array(1);
function toF32(v: number): number {
  f32[0] = v;
  return f32[0];
}

/**
 * int8 per output channel, symmetric round-to-nearest: scale = max|w| / 127 per row (one group of `cols`), q =
 * round(w / scale). Scales stay f32 (one per row: a negligible share of the bytes).
 */
export function quantizeInt8(w: Float32Array, rows: number, cols: number): QuantizedMatrix {
  checkShape(w, rows, cols);
  const m = allocQuantized('q8', rows, cols, cols);
  for (let r = 0; r < rows; r++) {
    let amax = 0;
    for (let c = 0; c < cols; c++) amax = Math.max(amax, Math.abs(w[r * cols + c]));
    const scale = toF32(amax / 127);
    m.scales[r] = scale;
    if (scale === 0) continue;
    for (let c = 0; c < cols; c++) {
      const q = Math.max(-127, Math.min(127, Math.round(w[r * cols + c] / scale)));
      setQuantValue(m, r, c, q);
    }
  }
  return markScaleF16(m);
}

/**
 * 4-bit group-wise, asymmetric, round to nearest: per group of `group` columns a scale and a min (both f16 values, so
 * the GPU stores them exactly) and q = clamp(round((w - min) / scale), 0, 15). The range starts at the group's
 * [min, max]; then, as ggml's k-quants do, the scale and min are refit by least squares to the rounded values and the
 * values rounded again, kept only while the group's squared error falls (at most `refits` times). No calibration
 * data: every weight counts the same (util/quant-weighted.ts weighs columns by an importance matrix).
 */
export function quantizeQ4(w: Float32Array, rows: number, cols: number, group: number, refits = 4): QuantizedMatrix {
  return quantizeQ4Groups(w, rows, cols, group, (x, q) => fitQ4Group(x, q, refits));
}

/** A q4 group's fit: its scale and min (f16 values) and, written into q, its values in [0, 15]. */
export interface Q4GroupFit {
  scale: number;
  min: number;
}

/**
 * Quantizes every group of a (rows, cols) matrix with `fit`, which gets the group's weights x (n) with c0 = its first
 * column, fills q[0..n) and returns the group's scale and min.
 */
export function quantizeQ4Groups(
  w: Float32Array,
  rows: number,
  cols: number,
  group: number,
  fit: (x: Float32Array, q: Uint8Array, c0: number) => Q4GroupFit,
): QuantizedMatrix {
  checkShape(w, rows, cols);
  if (!(Number.isInteger(group) && group >= 8 && group % 8 === 0)) {
    throw new RangeError(`q4 group size ${group} must be a positive multiple of 8`);
  }
  const m = allocQuantized('q4', rows, cols, group);
  const gpr = groupsPerRow(cols, group);
  const mins = m.mins as Float32Array;
  const q = new Uint8Array(group);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < gpr; g++) {
      const c0 = g * group;
      const n = Math.min(cols, c0 + group) - c0;
      const f = fit(w.subarray(r * cols + c0, r * cols + c0 + n), q, c0);
      mins[r * gpr + g] = f.min;
      m.scales[r * gpr + g] = f.scale;
      for (let i = 0; i < n; i++) setQuantValue(m, r, c0 + i, q[i]);
    }
  }
  return markScaleF16(m);
}

/** The nearest f16 value. */
export const toF16 = (v: number): number => f16ToF32(f32ToF16(v));

/**
 * The unweighted q4 fit of one group x (n): min/max range, then least-squares refits while the squared error falls
 * (quantizeQ4). Writes q[0..n).
 */
export function fitQ4Group(x: Float32Array, q: Uint8Array, refits = 4): Q4GroupFit {
  const n = x.length;
  const h = toF16;
  const cur = new Uint8Array(n);
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    lo = Math.min(lo, x[i]);
    hi = Math.max(hi, x[i]);
  }
  let min = h(lo);
  // Round the scale up where f16 rounding would shrink the range below the group's max.
  let scale = h((hi - min) / 15);
  if (scale * 15 + min < hi) scale = h(scale * (1 + 2 ** -10));
  /** Rounds into cur; returns the squared error of (scale, min). */
  const roundAll = (s: number, mn: number): number => {
    let e = 0;
    for (let i = 0; i < n; i++) {
      const v = s === 0 ? 0 : Math.max(0, Math.min(15, Math.round((x[i] - mn) / s)));
      cur[i] = v;
      e += (s * v + mn - x[i]) ** 2;
    }
    return e;
  };
  let best = roundAll(scale, min);
  q.set(cur);
  for (let it = 0; it < refits && scale > 0; it++) {
    // Least squares of x ~ s q + mn over the current q.
    let sq = 0;
    let sqq = 0;
    let sx = 0;
    let sqx = 0;
    for (let i = 0; i < n; i++) {
      sq += q[i];
      sqq += q[i] * q[i];
      sx += x[i];
      sqx += q[i] * x[i];
    }
    const den = n * sqq - sq * sq;
    if (den <= 0) break;
    const s2 = h((n * sqx - sq * sx) / den);
    const m2 = h((sx - s2 * sq) / n);
    if (!(s2 > 0)) break;
    const e = roundAll(s2, m2);
    if (!(e < best)) break;
    best = e;
    scale = s2;
    min = m2;
    q.set(cur);
  }
  return { scale, min };
}

function checkShape(w: Float32Array, rows: number, cols: number): void {
  if (w.length !== rows * cols) throw new RangeError(`quantize: ${w.length} values for a (${rows}, ${cols}) matrix`);
  const bad = firstNonFinite(w);
  if (bad >= 0) throw new RangeError(`quantize: weight ${bad} is ${w[bad]}; non-finite weights cannot be quantized`);
}

/** Index of the first NaN or infinite value, or -1 (callers name the tensor in their own error). */
export function firstNonFinite(w: Float32Array): number {
  for (let i = 0; i < w.length; i++) if (!Number.isFinite(w[i])) return i;
  return -1;
}
