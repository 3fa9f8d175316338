// Shared by matmul.wgsl and matmul_wg.wgsl: bindings, parameters and 8-element block loads for
// out[t, r] = sum_c x[t, c] * W[r, c] (+ bias[r]), one dispatch per weight row chunk.
// Defines: F32 (f32 weights) | BF16 (bf16 pairs) | Q8 (int8 + group scales) | Q4 (u4 + group scales and mins) |
// none of them (f16 pairs); SCALE_F16 (Q8/Q4: scales stored as f16); PACKED4X8 (lib/dequant); XV4 when
// cols % 4 == 0 (x read as vec4).
// Fusions (decode path, model/forward.ts), each optional:
//   NORM  RMSNorm folded in front: x is the raw residual stream, the kernel multiplies it by normW and scales each
//         token's dot products by 1 / sqrt(mean_c x[t, c]^2 + eps) (the sum of squares is taken alongside the dot
//         products, so no normed copy of x is written);
//   GLU   SwiGLU behind: the weight interleaves gate and up by rows (row 2i = gate_i, 2i + 1 = up_i) and output row i
//         is silu(gate_i . x) * (up_i . x) (GELU: GeGLU, gelu_tanh(gate_i . x) * (up_i . x), Gemma's);
//         `rows`, `rowOffset` and `outStride` count output rows;
//   ACC   a residual add behind: out[t, r] += result (out is the residual stream, never aliased by x).
//#include lib/dequant

struct Params {
  rows: u32,       // rows in this weight chunk
  cols: u32,       // valid elements per row (= x row length)
  strideV: u32,    // vec4 words per stored weight row: rowStride / 4 (f32) or rowStride / 8 (16-bit pairs)
  T: u32,          // tokens
  rowOffset: u32,  // the chunk's first row within the whole matrix
  outStride: u32,  // rows of the whole matrix (out row length)
  hasBias: u32,    // 1: add bias[row]; 0: the bias binding is a placeholder
  groupBlocks: u32,   // Q8/Q4: 8-element blocks per scale group (a group of a whole row: its block count)
  groupsPerRow: u32,  // Q8/Q4: scale groups per row
  eps: f32,           // NORM: RMSNorm epsilon
  _pad0: u32,
  _pad1: u32,
}

//#if XV4
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;      // (T, cols / 4) f32
//#else
@group(0) @binding(0) var<storage, read> x: array<f32>;            // (T, cols) f32
//#endif
//#if F32
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;      // (chunkRows, rowStride / 4) f32, zero-padded rows
//#else
//#if Q8
@group(0) @binding(1) var<storage, read> w: array<vec2<u32>>;      // (chunkRows, rowStride / 8) blocks of 8 int8
//#else
//#if Q4
@group(0) @binding(1) var<storage, read> w: array<u32>;            // (chunkRows, rowStride / 8) blocks of 8 u4
//#else
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;      // (chunkRows, rowStride / 8) packed 16-bit pairs
//#endif
//#endif
//#endif
@group(0) @binding(2) var<storage, read_write> out: array<f32>;    // (T, outStride) f32; a chunk writes its rows' columns
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<storage, read> bias: array<f32>;         // (outStride) f32, or a placeholder
//#if Q8
//#if SCALE_F16
@group(0) @binding(5) var<storage, read> scales: array<u32>;       // (chunkRows, groupsPerRow) f16, two to a word
//#else
@group(0) @binding(5) var<storage, read> scales: array<f32>;       // (chunkRows, groupsPerRow) f32
//#endif
//#endif
//#if Q4
//#if SCALE_F16
@group(0) @binding(5) var<storage, read> scales: array<u32>;       // (chunkRows, groupsPerRow) f16 (scale, min) pairs
//#else
@group(0) @binding(5) var<storage, read> scales: array<vec2<f32>>; // (chunkRows, groupsPerRow) f32 (scale, min)
//#endif
//#endif
// NORM: binding 5, or 6 after a quantized weight's scales
//#if NORM
//#if XV4
@group(0) @binding($NORM_BINDING) var<storage, read> normW: array<vec4<f32>>;  // (cols / 4) RMSNorm weight
//#else
@group(0) @binding($NORM_BINDING) var<storage, read> normW: array<f32>;        // (cols) RMSNorm weight
//#endif
//#endif

// Accumulators per token: the dot product, then the up row's (GLU), then the sum of squares of x (NORM).
//#if GLU
const GLU_ACC: u32 = 1u;
//#else
const GLU_ACC: u32 = 0u;
//#endif
//#if NORM
const NORM_ACC: u32 = 1u;
//#else
const NORM_ACC: u32 = 0u;
//#endif
const NACC: u32 = 1u + GLU_ACC + NORM_ACC;
const ACC_UP: u32 = 1u;             // index of the up accumulator (GLU)
const ACC_SS: u32 = 1u + GLU_ACC;   // index of the sum of squares (NORM)
// Weight rows per output row.
const WROWS: u32 = 1u + GLU_ACC;

// W[row, 8 * blk .. 8 * blk + 8) of this chunk, converted to f32 (padding columns are stored zeros).
fn wBlock(row: u32, blk: u32) -> Block8 {
//#if Q8
  let g = row * p.groupsPerRow + blk / p.groupBlocks;
//#if SCALE_F16
  let scale = unpack2x16float(scales[g / 2u])[g & 1u];
//#else
  let scale = scales[g];
//#endif
  let q = w[row * p.strideV + blk];
  return dequantQ8(q.x, q.y, scale);
//#else
//#if Q4
  let g = row * p.groupsPerRow + blk / p.groupBlocks;
//#if SCALE_F16
  let sm = unpack2x16float(scales[g]);
//#else
  let sm = scales[g];
//#endif
  return dequantQ4(w[row * p.strideV + blk], sm.x, sm.y);
//#else
//#if F32
  let i = row * p.strideV + blk * 2u;
  return Block8(w[i], w[i + 1u]);
//#else
  let q = w[row * p.strideV + blk];
//#if BF16
  let lo = vec4<u32>(q.x << 16u, q.x & 0xffff0000u, q.y << 16u, q.y & 0xffff0000u);
  let hi = vec4<u32>(q.z << 16u, q.z & 0xffff0000u, q.w << 16u, q.w & 0xffff0000u);
  return Block8(bitcast<vec4<f32>>(lo), bitcast<vec4<f32>>(hi));
//#else
  return Block8(
    vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)),
    vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)),
  );
//#endif
//#endif
//#endif
//#endif
}

// x[t, 8 * blk .. 8 * blk + 8) for a full block (8 * blk + 8 <= cols).
fn xBlock(t: u32, blk: u32) -> Block8 {
//#if XV4
  let i = t * (p.cols / 4u) + blk * 2u;
  return Block8(x[i], x[i + 1u]);
//#else
  let i = t * p.cols + blk * 8u;
  return Block8(vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]), vec4<f32>(x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]));
//#endif
}

// x[t, c] as a scalar.
fn xAt(t: u32, c: u32) -> f32 {
//#if XV4
  return x[t * (p.cols / 4u) + c / 4u][c % 4u];
//#else
  return x[t * p.cols + c];
//#endif
}

// Element k (0..7) of a block.
fn blockAt(v: Block8, k: u32) -> f32 {
  return select(v.hi[k & 3u], v.lo[k & 3u], k < 4u);
}

fn dot8(a: Block8, b: Block8) -> f32 {
  return dot(a.lo, b.lo) + dot(a.hi, b.hi);
}

fn mul8(a: Block8, b: Block8) -> Block8 {
  return Block8(a.lo * b.lo, a.hi * b.hi);
}

//#if NORM
// normW[8 * blk .. 8 * blk + 8) for a full block.
fn gBlock(blk: u32) -> Block8 {
//#if XV4
  return Block8(normW[blk * 2u], normW[blk * 2u + 1u]);
//#else
  let i = blk * 8u;
  return Block8(
    vec4<f32>(normW[i], normW[i + 1u], normW[i + 2u], normW[i + 3u]),
    vec4<f32>(normW[i + 4u], normW[i + 5u], normW[i + 6u], normW[i + 7u]),
  );
//#endif
}

fn gAt(c: u32) -> f32 {
//#if XV4
  return normW[c / 4u][c % 4u];
//#else
  return normW[c];
//#endif
}
//#endif

// The output of output row r for token t from its accumulators: the RMSNorm scale, SwiGLU.
fn finish(dotv: f32, up: f32, ss: f32) -> f32 {
  var v = dotv;
  var u = up;
//#if NORM
  let inv = inverseSqrt(ss / f32(p.cols) + p.eps);
  v *= inv;
  u *= inv;
//#endif
//#if GLU
//#if GELU
  // GELU's tanh form (HF's gelu_pytorch_tanh); the clamp keeps an exp-based tanh finite, tanh(15) is 1 in f32
  v = 0.5 * v * (1.0 + tanh(clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0))) * u;
//#else
  // exp(-v) overflows to +inf for v < -88: v / inf = -0, the right limit.
  v = v / (1.0 + exp(-v)) * u;
//#endif
//#endif
  return v;
}

// Writes out[t, rowOffset + r] (adding the bias; ACC: adding to what out holds).
fn store(t: u32, r: u32, v: f32) {
  let row = p.rowOffset + r;
  var b = 0.0;
  if (p.hasBias != 0u) { b = bias[row]; }
  let i = t * p.outStride + row;
//#if ACC
  out[i] = out[i] + v + b;
//#else
  out[i] = v + b;
//#endif
}
