// Attention mass outside the streaming window (calibration of streaming heads, DuoAttention's criterion without
// training): for query token t (block-table row tokenSeq[t], position pos = positions[t]) and local query head h,
// dense causal softmax over keys 0..pos of KV head h / group in the paged f16 cache (after this step's kv_write):
//   mass[t, h] = sum_{j outside window} p_j,   window = [0, sink) U [pos + 1 - local, pos],   p = softmax(scale q.k)
// as the layer attends: keys before its sliding window (p.window > 0) get no mass, scores are soft-capped (Gemma 2).
// Lanes layout (lib/lanes.wgsl): LANES invocations per (token, head), each with its own running softmax and outside
// sum (no barriers in the key loop), merged at the end. q rows hold qRowHeads heads, of which
// [qHeadOffset, qHeadOffset + nHeads) run.
//#include lib/token_head
//#include lib/block_table
//#include lib/lanes

const HD: u32 = $HD;
const HW: u32 = HD / 2u;
const LANES: u32 = $LANES;

struct Params {
  tokens: u32,          // T
  nHeads: u32,          // query heads processed
  nKvHeads: u32,        // KV heads in the cache
  group: u32,           // nHeads / nKvHeads
  pageSize: u32,        // tokens per page
  maxPagesPerSeq: u32,  // block table row length
  scale: f32,           // softmax scale
  sink: u32,            // sink tokens
  local: u32,           // local window
  qHeadOffset: u32,     // first query head of the q rows processed
  qRowHeads: u32,       // query heads per q row
  window: u32,          // the layer's sliding window (0: none)
  softcap: f32,         // attention logit soft-cap (0: none)
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;      // (T, qRowHeads, HW) f32 pairs, after RoPE
@group(0) @binding(1) var<storage, read> kCache: array<u32>;       // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs kCache
@group(0) @binding(2) var<storage, read> blockTable: array<u32>;   // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(3) var<storage, read> tokenSeq: array<u32>;     // (T) block-table row of each query token
@group(0) @binding(4) var<storage, read> positions: array<u32>;    // (T) absolute position of each query token
@group(0) @binding(5) var<storage, read_write> mass: array<f32>;   // (T, nHeads) share of mass outside the window
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> laneOut: array<f32, LANES>;

@compute @workgroup_size(LANES)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let th = tokenHeadOf(grid, 0u);
  if (!th.valid) { return; }
  let seq = tokenSeq[th.t];
  let pos = positions[th.t];
  loadQuery((th.t * p.qRowHeads + p.qHeadOffset + th.h) * HW, p.scale);
  var outside = 0.0; // this lane's sum of exp(s_j - m) over keys outside the window
  let first = select(0u, pos + 1u - p.window, p.window > 0u && pos + 1u > p.window);
  for (var j = first + lid; j <= pos; j += LANES) {
    st = softmaxFold(st, softcap(scoreCached(kvWord(seq, j, th.kvh)), p.softcap));
    outside *= st.alpha;
    if (j >= p.sink && j + p.local <= pos) { outside += st.p; }
  }
  laneOut[lid] = outside;
  let g = mergeLanes(lid);
  if (lid == 0u) {
    var o = 0.0;
    for (var i = 0u; i < LANES; i++) { o += laneOut[i] * g.w[i]; }
    mass[th.t * p.nHeads + th.h] = o * softmaxInv(g.l);
  }
}
