/**
 * Checkpoint dtypes and the 16-bit conversions shared by the checkpoint loader, the kernels' uploads and the tests
 * (plain numeric code, no WebGPU).
 */

export type WeightDType = 'f32' | 'f16' | 'bf16';

export function bytesPerElement(dtype: WeightDType): number {
  return dtype === 'f32' ? 4 : 2;
}

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
