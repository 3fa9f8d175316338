/**
 * Plain-TS reference dequantization of the ggml tensor types sift reads, one block at a time, straight from the
 * block definitions of the GGUF specification / ggml (independent of checkpoint/ggml.ts, which repacks into sift's
 * layouts): bytes of a (rows, cols) tensor -> f32 (rows, cols). Every product is rounded to f32 in ggml's order
 * (d * sc first, then * q; then - min), so the result is what ggml's own dequantize_row_* computes.
 */
import { bf16ToF32, f16ToF32 } from '../../util/dtype.js';

export type RefGgmlType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q5_0' | 'Q4_K' | 'Q6_K';

const fr = Math.fround;

function half(b: Uint8Array, o: number): number {
  return f16ToF32(b[o] | (b[o + 1] << 8));
}

function i8(v: number): number {
  return v >= 128 ? v - 256 : v;
}

/** One row of `cols` values starting at byte `o`, appended to `out` at `at`. */
function row(type: RefGgmlType, b: Uint8Array, o: number, cols: number, out: Float32Array, at: number): void {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  switch (type) {
    case 'F32':
      for (let i = 0; i < cols; i++) out[at + i] = dv.getFloat32(o + 4 * i, true);
      return;
    case 'F16':
      for (let i = 0; i < cols; i++) out[at + i] = half(b, o + 2 * i);
      return;
    case 'BF16':
      for (let i = 0; i < cols; i++) out[at + i] = bf16ToF32(dv.getUint16(o + 2 * i, true));
      return;
    case 'Q8_0':
      // block: d (f16), qs[32] int8
      for (let blk = 0; blk < cols / 32; blk++) {
        const p = o + blk * 34;
        const d = half(b, p);
        for (let i = 0; i < 32; i++) out[at + blk * 32 + i] = fr(d * i8(b[p + 2 + i]));
      }
      return;
    case 'Q4_0':
      // block: d (f16), qs[16]; value j = low nibble of qs[j] - 8, value j + 16 = high nibble - 8
      for (let blk = 0; blk < cols / 32; blk++) {
        const p = o + blk * 18;
        const d = half(b, p);
        for (let j = 0; j < 16; j++) {
          out[at + blk * 32 + j] = fr(((b[p + 2 + j] & 0x0f) - 8) * d);
          out[at + blk * 32 + j + 16] = fr(((b[p + 2 + j] >> 4) - 8) * d);
        }
      }
      return;
    case 'Q5_0':
      // block: d (f16), qh (u32, the fifth bit of each value), qs[16] (the low four bits, as Q4_0's);
      // value j = (low nibble of qs[j] | bit j of qh << 4) - 16, value j + 16 = (high nibble | bit j + 16 << 4) - 16
      for (let blk = 0; blk < cols / 32; blk++) {
        const p = o + blk * 22;
        const d = half(b, p);
        const qh = dv.getUint32(p + 2, true);
        for (let j = 0; j < 16; j++) {
          const hi0 = Math.floor(qh / 2 ** j) % 2;
          const hi1 = Math.floor(qh / 2 ** (j + 16)) % 2;
          out[at + blk * 32 + j] = fr(((b[p + 6 + j] & 0x0f) + 16 * hi0 - 16) * d);
          out[at + blk * 32 + j + 16] = fr(((b[p + 6 + j] >> 4) + 16 * hi1 - 16) * d);
        }
      }
      return;
    case 'Q4_K':
      // block: d, dmin (f16), scales[12] (8 x 6-bit scale and min), qs[128]
      for (let blk = 0; blk < cols / 256; blk++) {
        const p = o + blk * 144;
        const d = half(b, p);
        const dmin = half(b, p + 2);
        const sc = p + 4;
        const scaleMin = (j: number): [number, number] =>
          j < 4
            ? [b[sc + j] & 63, b[sc + j + 4] & 63]
            : [(b[sc + j + 4] & 0x0f) | ((b[sc + j - 4] >> 6) << 4), (b[sc + j + 4] >> 4) | ((b[sc + j] >> 6) << 4)];
        let y = at + blk * 256;
        let q = p + 16;
        for (let j = 0; j < 8; j += 2) {
          const [s1, m1] = scaleMin(j);
          const [s2, m2] = scaleMin(j + 1);
          const d1 = fr(d * s1);
          const mn1 = fr(dmin * m1);
          const d2 = fr(d * s2);
          const mn2 = fr(dmin * m2);
          for (let l = 0; l < 32; l++) out[y++] = fr(fr(d1 * (b[q + l] & 0x0f)) - mn1);
          for (let l = 0; l < 32; l++) out[y++] = fr(fr(d2 * (b[q + l] >> 4)) - mn2);
          q += 32;
        }
      }
      return;
    case 'Q6_K':
      // block: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] int8, d (f16)
      for (let blk = 0; blk < cols / 256; blk++) {
        const p = o + blk * 210;
        const d = half(b, p + 208);
        let ql = p;
        let qh = p + 128;
        let sc = p + 192;
        let y = at + blk * 256;
        for (let n = 0; n < 256; n += 128) {
          for (let l = 0; l < 32; l++) {
            const is = l >> 4;
            const q1 = ((b[ql + l] & 0x0f) | (((b[qh + l] >> 0) & 3) << 4)) - 32;
            const q2 = ((b[ql + l + 32] & 0x0f) | (((b[qh + l] >> 2) & 3) << 4)) - 32;
            const q3 = ((b[ql + l] >> 4) | (((b[qh + l] >> 4) & 3) << 4)) - 32;
            const q4 = ((b[ql + l + 32] >> 4) | (((b[qh + l] >> 6) & 3) << 4)) - 32;
            out[y + l] = fr(fr(d * i8(b[sc + is])) * q1);
            out[y + l + 32] = fr(fr(d * i8(b[sc + is + 2])) * q2);
            out[y + l + 64] = fr(fr(d * i8(b[sc + is + 4])) * q3);
            out[y + l + 96] = fr(fr(d * i8(b[sc + is + 6])) * q4);
          }
          y += 128;
          ql += 64;
          qh += 32;
          sc += 8;
        }
      }
      return;
  }
}

/** Bytes per row of `cols` values. */
export function refRowBytes(type: RefGgmlType, cols: number): number {
  switch (type) {
    case 'F32':
      return cols * 4;
    case 'F16':
    case 'BF16':
      return cols * 2;
    case 'Q8_0':
      return (cols / 32) * 34;
    case 'Q4_0':
      return (cols / 32) * 18;
    case 'Q5_0':
      return (cols / 32) * 22;
    case 'Q4_K':
      return (cols / 256) * 144;
    case 'Q6_K':
      return (cols / 256) * 210;
  }
}

/** Dequantizes a (rows, cols) tensor stored as `type`. */
export function refDequantize(type: RefGgmlType, bytes: Uint8Array, rows: number, cols: number): Float32Array {
  const rb = refRowBytes(type, cols);
  if (bytes.byteLength !== rows * rb) throw new RangeError(`${bytes.byteLength} bytes for (${rows}, ${cols}) ${type}`);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) row(type, bytes, r * rb, cols, out, r * cols);
  return out;
}
