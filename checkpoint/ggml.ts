/**
 * ggml tensor types as GGUF files store them, and the repacking of ggml's block formats into sift's quantized
 * layouts (checkpoint/quant.ts), written from the GGUF specification and ggml's block definitions.
 *
 * A ggml tensor of shape (rows, cols) (GGUF dims [cols, rows]: ne[0] is the contiguous one) stores each row as
 * cols / blockSize blocks of typeSize bytes, little-endian:
 *   Q8_0 (32 values, 34 bytes): f16 d; int8 q[32]                        w[i] = d * q[i]
 *   Q4_0 (32 values, 18 bytes): f16 d; u8 qs[16]                          w[i] = d * (nib[i] - 8), nib[i] = low nibble
 *        of qs[i] for i < 16, high nibble of qs[i - 16] for i >= 16
 *   Q5_0 (32 values, 22 bytes): f16 d; u8 qh[4]; u8 qs[16]              w[i] = d * (v[i] - 16), v[i] = the Q4_0
 *        nibble of qs with bit 4 from bit i of qh (little-endian u32); llama-quantize writes it where a Q4_K row
 *        is not a whole number of 256-value blocks
 *   Q4_K (256 values, 144 bytes): f16 d; f16 dmin; u8 scales[12]; u8 qs[128]
 *        8 sub-blocks of 32 with 6-bit scale sc[j] and min m[j] packed in scales[12] (j < 4: low 6 bits of
 *        scales[j] and scales[j + 4]; j >= 4: low nibble / high nibble of scales[j + 4] joined with the top two bits
 *        of scales[j - 4] / scales[j]); the 64 values of sub-block pair (2p, 2p + 1) are the low and the high nibbles
 *        of qs[32p .. 32p + 32);  w = (d * sc[j]) * nib - (dmin * m[j])
 *   Q6_K (256 values, 210 bytes): u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d
 *        per half of 128 values (ql += 64, qh += 32, scales += 8 per half), for l < 32:
 *          value l      = (ql[l] & 15)      | ((qh[l] >> 0 & 3) << 4), value l + 32 = (ql[l + 32] & 15) | (qh[l] >> 2 & 3) << 4
 *          value l + 64 = (ql[l] >> 4)      | ((qh[l] >> 4 & 3) << 4), value l + 96 = (ql[l + 32] >> 4) | (qh[l] >> 6 & 3) << 4
 *        each minus 32, times (d * scales[v / 16]) for value v of the half (16 values per scale).
 * Repacking keeps every weight bit-exact: the scale products d * sc fit in f32 (11 + 8 significant bits), and the
 * kernels compute scale * q (+ min) in f32 as ggml's own dequantization does.
 */
import { SiftError } from '../config/errors.js';
import { f16ToF32 } from '../util/dtype.js';
import { allocQuantized, markScaleF16, type QuantizedMatrix } from '../util/quant.js';

/** ggml_type ids sift reads, as the GGUF specification numbers them. */
export const GGML_TYPE = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q5_0: 6,
  Q8_0: 8,
  Q4_K: 12,
  Q6_K: 14,
  BF16: 30,
} as const;
export type GgmlTypeName = keyof typeof GGML_TYPE;

/** Every ggml_type id of the specification, by name (to name what sift cannot load). */
export const GGML_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: 'F32',
  1: 'F16',
  2: 'Q4_0',
  3: 'Q4_1',
  6: 'Q5_0',
  7: 'Q5_1',
  8: 'Q8_0',
  9: 'Q8_1',
  10: 'Q2_K',
  11: 'Q3_K',
  12: 'Q4_K',
  13: 'Q5_K',
  14: 'Q6_K',
  15: 'Q8_K',
  16: 'IQ2_XXS',
  17: 'IQ2_XS',
  18: 'IQ3_XXS',
  19: 'IQ1_S',
  20: 'IQ4_NL',
  21: 'IQ3_S',
  22: 'IQ2_S',
  23: 'IQ4_XS',
  24: 'I8',
  25: 'I16',
  26: 'I32',
  27: 'I64',
  28: 'F64',
  29: 'IQ1_M',
  30: 'BF16',
  34: 'TQ1_0',
  35: 'TQ2_0',
  39: 'MXFP4',
};

/** Values per block and bytes per block of each type sift reads. */
export const GGML_BLOCK: Readonly<Record<GgmlTypeName, { values: number; bytes: number }>> = {
  F32: { values: 1, bytes: 4 },
  F16: { values: 1, bytes: 2 },
  BF16: { values: 1, bytes: 2 },
  Q8_0: { values: 32, bytes: 34 },
  Q4_0: { values: 32, bytes: 18 },
  Q5_0: { values: 32, bytes: 22 },
  Q4_K: { values: 256, bytes: 144 },
  Q6_K: { values: 256, bytes: 210 },
};

/** The name of a ggml type id sift reads, or null. */
export function ggmlTypeName(id: number): GgmlTypeName | null {
  for (const [name, v] of Object.entries(GGML_TYPE)) if (v === id) return name as GgmlTypeName;
  return null;
}

/** Bytes of one row of `cols` values of `type`; throws naming `what` when cols is not a whole number of blocks. */
export function ggmlRowBytes(type: GgmlTypeName, cols: number, what: string): number {
  const b = GGML_BLOCK[type];
  if (cols % b.values !== 0) {
    throw new SiftError(
      'CHECKPOINT_INVALID',
      `${what}: ${cols} values per row is not a whole number of ${type} blocks (${b.values} values each)`,
    );
  }
  return (cols / b.values) * b.bytes;
}

/** ggml's quantized types, and the sift layout each repacks into. */
export const GGML_QUANTIZED = ['Q8_0', 'Q4_0', 'Q5_0', 'Q4_K', 'Q6_K'] as const;
export type GgmlQuantName = (typeof GGML_QUANTIZED)[number];

export function isGgmlQuantized(t: GgmlTypeName): t is GgmlQuantName {
  return (GGML_QUANTIZED as readonly string[]).includes(t);
}

/** The sift layout a quantized ggml type repacks into: int8 values (Q8_0, Q5_0, Q6_K) or u4 values with mins. */
export function ggmlLayout(t: GgmlQuantName): 'q8' | 'q4' {
  return t === 'Q4_0' || t === 'Q4_K' ? 'q4' : 'q8';
}

/** The 6-bit scale and min of sub-block j (0..7) of a Q4_K block's 12 scale bytes at `s`. */
function q4kScaleMin(b: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [b[s + j] & 63, b[s + j + 4] & 63];
  return [(b[s + j + 4] & 0xf) | ((b[s + j - 4] >> 6) << 4), (b[s + j + 4] >> 4) | ((b[s + j] >> 6) << 4)];
}

/**
 * Repacks a (rows, cols) tensor of a quantized ggml type, given as the file's bytes, into sift's layout:
 * Q8_0 and Q5_0 -> q8 group 32, Q6_K -> q8 group 16, Q4_0 and Q4_K -> q4 group 32. Exact (see the file comment).
 */
export function repackGgml(type: GgmlQuantName, bytes: Uint8Array, rows: number, cols: number, what: string) {
  const rowBytes = ggmlRowBytes(type, cols, what);
  if (bytes.byteLength !== rows * rowBytes) {
    throw new SiftError(
      'CHECKPOINT_INVALID',
      `${what}: ${bytes.byteLength} bytes, (${rows}, ${cols}) ${type} needs ${rows * rowBytes}`,
    );
  }
  const half = (o: number) => f16ToF32(bytes[o] | (bytes[o + 1] << 8));
  const f = new Float32Array(1);
  const prod = (a: number, b: number) => {
    f[0] = a * b;
    return f[0];
  };
  // Values are written straight into the layout: q8 bytes are the int8 values in order (little-endian words), and
  // a q4 word's bytes hold values k (low nibble) and k + 4 (high nibble) of its block of 8, so the nibbles of four
  // consecutive ggml bytes A and the next four B become one word: (A & 0x0f0f0f0f) | (B & 0x0f0f0f0f) << 4 for low
  // nibbles, ((A >>> 4) & 0x0f0f0f0f) | (B & 0xf0f0f0f0) for high nibbles.
  const u32at = (o: number) => (bytes[o] | (bytes[o + 1] << 8) | (bytes[o + 2] << 16) | (bytes[o + 3] << 24)) >>> 0;
  const lowWord = (o: number) => ((u32at(o) & 0x0f0f0f0f) | ((u32at(o + 4) & 0x0f0f0f0f) << 4)) >>> 0;
  const highWord = (o: number) => (((u32at(o) >>> 4) & 0x0f0f0f0f) | (u32at(o + 4) & 0xf0f0f0f0)) >>> 0;
  // Q8_0 and Q5_0: blocks of 32 values, an f16 scale first; `unpack` writes block o's values as int8 bytes at `at`
  const int8Blocks = (blockBytes: number, unpack: (o: number, at: number, out: Uint8Array) => void) => {
    const q = allocQuantized('q8', rows, cols, 32);
    const out = new Uint8Array(q.values.buffer);
    const rowOut = (q.values.length * 4) / rows;
    const gpr = cols / 32;
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < gpr; g++) {
        const o = r * rowBytes + g * blockBytes;
        q.scales[r * gpr + g] = half(o);
        unpack(o, r * rowOut + g * 32, out);
      }
    }
    return q;
  };
  let m: QuantizedMatrix;
  switch (type) {
    case 'Q8_0':
      m = int8Blocks(34, (o, at, out) => {
        for (let i = 0; i < 32; i++) out[at + i] = bytes[o + 2 + i];
      });
      break;
    case 'Q4_0': {
      m = allocQuantized('q4', rows, cols, 32);
      const mins = m.mins as Float32Array;
      const wpr = m.values.length / rows;
      const gpr = cols / 32;
      for (let r = 0; r < rows; r++) {
        for (let g = 0; g < gpr; g++) {
          const o = r * rowBytes + g * 18;
          const d = half(o);
          m.scales[r * gpr + g] = d;
          mins[r * gpr + g] = prod(-8, d);
          const w = r * wpr + g * 4;
          m.values[w] = lowWord(o + 2); // values 0..7: low nibbles of qs[0..7]
          m.values[w + 1] = lowWord(o + 10); // values 8..15
          m.values[w + 2] = highWord(o + 2); // values 16..23: high nibbles of qs[0..7]
          m.values[w + 3] = highWord(o + 10); // values 24..31
        }
      }
      break;
    }
    case 'Q5_0':
      m = int8Blocks(22, (o, at, out) => {
        const qh = u32at(o + 2);
        for (let j = 0; j < 16; j++) {
          const q = bytes[o + 6 + j];
          // (5-bit value - 16) as an int8 byte: bit 4 of value j is bit j of qh, of value j + 16 bit j + 16
          out[at + j] = ((q & 0xf) | (((qh >>> j) & 1) << 4)) - 16;
          out[at + j + 16] = ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16;
        }
      });
      break;
    case 'Q4_K': {
      m = allocQuantized('q4', rows, cols, 32);
      const mins = m.mins as Float32Array;
      const wpr = m.values.length / rows;
      const gpr = cols / 32;
      for (let r = 0; r < rows; r++) {
        for (let blk = 0; blk < cols / 256; blk++) {
          const o = r * rowBytes + blk * 144;
          const d = half(o);
          const dmin = half(o + 2);
          for (let j = 0; j < 8; j++) {
            const [sc, mn] = q4kScaleMin(bytes, o + 4, j);
            const g = r * gpr + blk * 8 + j;
            m.scales[g] = prod(d, sc);
            mins[g] = -prod(dmin, mn);
            // Sub-block j: the low (j even) or high (j odd) nibbles of qs[32 (j >> 1) .. + 32).
            const qs = o + 16 + (j >> 1) * 32;
            const w = r * wpr + (blk * 8 + j) * 4;
            for (let k = 0; k < 4; k++) m.values[w + k] = (j & 1) === 0 ? lowWord(qs + 8 * k) : highWord(qs + 8 * k);
          }
        }
      }
      break;
    }
    case 'Q6_K': {
      m = allocQuantized('q8', rows, cols, 16);
      const out = new Uint8Array(m.values.buffer);
      const rowOut = (m.values.length * 4) / rows;
      const gpr = cols / 16;
      for (let r = 0; r < rows; r++) {
        for (let blk = 0; blk < cols / 256; blk++) {
          const o = r * rowBytes + blk * 210;
          const d = half(o + 208);
          for (let s = 0; s < 16; s++) m.scales[r * gpr + blk * 16 + s] = prod(d, (bytes[o + 192 + s] << 24) >> 24);
          for (let h = 0; h < 2; h++) {
            const ql = o + h * 64;
            const qh = o + 128 + h * 32;
            const base = r * rowOut + blk * 256 + h * 128;
            for (let l = 0; l < 32; l++) {
              const hb = bytes[qh + l];
              const a = bytes[ql + l];
              const b = bytes[ql + l + 32];
              // (6-bit value - 32) as an int8 byte
              out[base + l] = ((a & 0xf) | ((hb & 3) << 4)) - 32;
              out[base + l + 32] = ((b & 0xf) | (((hb >> 2) & 3) << 4)) - 32;
              out[base + l + 64] = ((a >> 4) | (((hb >> 4) & 3) << 4)) - 32;
              out[base + l + 96] = ((b >> 4) | (((hb >> 6) & 3) << 4)) - 32;
            }
          }
        }
      }
      break;
    }
  }
  return markScaleF16(m);
}
