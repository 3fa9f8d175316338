// Embedding gather: out[t, :] = table[ids[t], :] as f32, times scale (Gemma's sqrt(hidden); else 1); ids >= vocab give
// a row of zeros.
// One dispatch per table row chunk: a token's row is written by the chunk that holds its id (the zero rows of
// out-of-range ids by the dispatch with zeroFill set), so every element of out is written exactly once.
// One workgroup per token (spread over workgroup_id x and y); invocations stride over the hidden columns.
// Defines: F32 (f32 table) | BF16 (bf16 pairs) | Q8 / Q4 with QUANT (quantized rows, lib/dequant; SCALE_F16, PACKED4X8) |
// none of them (f16 pairs). Quantized rows are read a block of 8 columns per invocation.
//#include lib/dequant

override WG: u32 = 64;

struct Params {
  T: u32,
  hidden: u32,     // valid elements per row
  rowStride: u32,  // stored elements per row (hidden rounded up to a multiple of 8)
  firstRow: u32,   // the chunk's first row (token id)
  chunkRows: u32,
  vocab: u32,      // rows of the whole table
  zeroFill: u32,   // 1: this dispatch also writes the zero rows of ids >= vocab
  groupBlocks: u32,   // Q8/Q4: 8-column blocks per scale group
  groupsPerRow: u32,  // Q8/Q4: scale groups per row
  scale: f32,         // multiplies every element (1: none)
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> ids: array<u32>;          // (T) token ids
//#if F32
@group(0) @binding(1) var<storage, read> table: array<f32>;        // (chunkRows, rowStride) f32
//#else
//#if Q8
@group(0) @binding(1) var<storage, read> table: array<vec2<u32>>;  // (chunkRows, rowStride / 8) blocks of 8 int8
//#else
//#if Q4
@group(0) @binding(1) var<storage, read> table: array<u32>;        // (chunkRows, rowStride / 8) blocks of 8 u4
//#else
@group(0) @binding(1) var<storage, read> table: array<u32>;        // (chunkRows, rowStride / 2) packed 16-bit pairs
//#endif
//#endif
//#endif
@group(0) @binding(2) var<storage, read_write> out: array<f32>;    // (T, hidden) f32
@group(0) @binding(3) var<uniform> p: Params;
//#if Q8
//#if SCALE_F16
@group(0) @binding(4) var<storage, read> scales: array<u32>;       // (chunkRows, groupsPerRow) f16, two to a word
//#else
@group(0) @binding(4) var<storage, read> scales: array<f32>;       // (chunkRows, groupsPerRow) f32
//#endif
//#endif
//#if Q4
//#if SCALE_F16
@group(0) @binding(4) var<storage, read> scales: array<u32>;       // (chunkRows, groupsPerRow) f16 (scale, min) pairs
//#else
@group(0) @binding(4) var<storage, read> scales: array<vec2<f32>>; // (chunkRows, groupsPerRow) f32 (scale, min)
//#endif
//#endif

//#if Q8
// Block blk (8 columns) of a row of this chunk.
fn rowBlock(row: u32, blk: u32) -> Block8 {
  let g = row * p.groupsPerRow + blk / p.groupBlocks;
//#if SCALE_F16
  let scale = unpack2x16float(scales[g / 2u])[g & 1u];
//#else
  let scale = scales[g];
//#endif
  let q = table[row * (p.rowStride / 8u) + blk];
  return dequantQ8(q.x, q.y, scale);
}
//#endif
//#if Q4
fn rowBlock(row: u32, blk: u32) -> Block8 {
  let g = row * p.groupsPerRow + blk / p.groupBlocks;
//#if SCALE_F16
  let sm = unpack2x16float(scales[g]);
//#else
  let sm = scales[g];
//#endif
  return dequantQ4(table[row * (p.rowStride / 8u) + blk], sm.x, sm.y);
}
//#endif

//#if !QUANT
// table[row, c] of this chunk as f32.
fn element(row: u32, c: u32) -> f32 {
//#if F32
  return table[row * p.rowStride + c];
//#else
  let word = table[(row * p.rowStride + c) / 2u];
//#if BF16
  return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (c & 1u) == 1u));
//#else
  return unpack2x16float(word)[c & 1u];
//#endif
//#endif
}
//#endif

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= p.T) { return; }
  let id = ids[t];
  let inChunk = id >= p.firstRow && id - p.firstRow < p.chunkRows;
  let zero = id >= p.vocab && p.zeroFill != 0u;
  if (!inChunk && !zero) { return; }
  let base = t * p.hidden;
//#if QUANT
  let blocks = (p.hidden + 7u) / 8u;
  for (var blk = lid; blk < blocks; blk += WG) {
    var v = Block8(vec4<f32>(0.0), vec4<f32>(0.0));
    if (inChunk) { v = rowBlock(id - p.firstRow, blk); }
    for (var k = 0u; k < 8u && blk * 8u + k < p.hidden; k++) {
      out[base + blk * 8u + k] = select(v.hi[k & 3u], v.lo[k & 3u], k < 4u) * p.scale;
    }
  }
//#else
  for (var c = lid; c < p.hidden; c += WG) {
    var v = 0.0;
    if (inChunk) { v = element(id - p.firstRow, c); }
    out[base + c] = v * p.scale;
  }
//#endif
}
