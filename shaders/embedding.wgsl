// Embedding gather: out[t, :] = table[ids[t], :] as f32; ids >= vocab give a row of zeros.
// One dispatch per table row chunk: a token's row is written by the chunk that holds its id (the zero rows of
// out-of-range ids by the dispatch with zeroFill set), so every element of out is written exactly once.
// One workgroup per token (spread over workgroup_id x and y); invocations stride over the hidden columns.
// Defines: F32 (f32 table) | BF16 (bf16 pairs) | neither (f16 pairs).

override WG: u32 = 64;

struct Params {
  T: u32,
  hidden: u32,     // valid elements per row
  rowStride: u32,  // stored elements per row (hidden rounded up to a multiple of 8)
  firstRow: u32,   // the chunk's first row (token id)
  chunkRows: u32,
  vocab: u32,      // rows of the whole table
  zeroFill: u32,   // 1: this dispatch also writes the zero rows of ids >= vocab
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> ids: array<u32>;          // (T) token ids
//#if F32
@group(0) @binding(1) var<storage, read> table: array<f32>;        // (chunkRows, rowStride) f32
//#else
@group(0) @binding(1) var<storage, read> table: array<u32>;        // (chunkRows, rowStride / 2) packed 16-bit pairs
//#endif
@group(0) @binding(2) var<storage, read_write> out: array<f32>;    // (T, hidden) f32
@group(0) @binding(3) var<uniform> p: Params;

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
  for (var c = lid; c < p.hidden; c += WG) {
    var v = 0.0;
    if (inChunk) { v = element(id - p.firstRow, c); }
    out[base + c] = v;
  }
}
