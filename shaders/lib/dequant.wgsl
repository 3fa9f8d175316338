// Dequantization of sift's quantized weight layouts (util/quant.ts), written once for every kernel that reads
// weights (matmul's matvec and token tiles, embedding; a tiled GEMM calls the same functions): eight consecutive
// values of a row as two vec4<f32>, computed in f32 exactly as the host's dequantize() does (scale * q, then + min).
//   q8: a block of 8 int8 values in two u32 words, value 4k + j in byte j of word k (unpack4xI8 order)
//   q4: a block of 8 u4 values in one u32 word, value j in the low nibble of byte j, value j + 4 in its high nibble
// Scales (and q4 mins) are per group of columns; callers fetch them (f32, or f16 where every one is exact).
// Define PACKED4X8 where the device has WGSL's packed_4x8_integer_dot_product; else shifts do the unpacking.

// Eight consecutive elements of a row (or of x), as two vec4.
struct Block8 {
  lo: vec4<f32>,
  hi: vec4<f32>,
}

// The four signed bytes of w (byte 0 first).
fn i8x4(w: u32) -> vec4<f32> {
//#if PACKED4X8
  return vec4<f32>(unpack4xI8(w));
//#else
  return vec4<f32>(vec4<i32>(i32(w << 24u), i32(w << 16u), i32(w << 8u), i32(w)) >> vec4<u32>(24u));
//#endif
}

// The four unsigned bytes of w (byte 0 first); callers mask nibbles first.
fn u8x4(w: u32) -> vec4<f32> {
//#if PACKED4X8
  return vec4<f32>(unpack4xU8(w));
//#else
  return vec4<f32>((vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu));
//#endif
}

// q8 block: values (w0 bytes, w1 bytes) * scale.
fn dequantQ8(w0: u32, w1: u32, scale: f32) -> Block8 {
  return Block8(i8x4(w0) * scale, i8x4(w1) * scale);
}

// q4 block: values (low nibbles, high nibbles of w) * scale + min.
fn dequantQ4(w: u32, scale: f32, minv: f32) -> Block8 {
  return Block8(u8x4(w & 0x0f0f0f0fu) * scale + minv, u8x4((w >> 4u) & 0x0f0f0f0fu) * scale + minv);
}
