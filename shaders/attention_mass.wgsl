// Attention mass outside the streaming window (calibration of streaming heads, DuoAttention's criterion without
// training): for query token t (block-table row tokenSeq[t], position pos = positions[t]) and local query head h,
// dense causal softmax over keys 0..pos of KV head h / group in the paged f16 cache (after this step's kv_write):
//   mass[t, h] = sum_{j outside window} p_j,   window = [0, sink) U [pos + 1 - local, pos],   p = softmax(scale q.k)
// LANES invocations per (token, head), each with its own running max, total sum and outside sum (no barriers in the
// key loop), merged at the end. q rows hold qRowHeads heads, of which [qHeadOffset, qHeadOffset + nHeads) run.

const HD: u32 = $HD;
const HW: u32 = HD / 2u;
const LANES: u32 = $LANES;
const NEG_BIG: f32 = -3.0e38;

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
  _p0: u32,
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;      // (T, qRowHeads, HW) f32 pairs, after RoPE
@group(0) @binding(1) var<storage, read> kCache: array<u32>;       // (numPages, pageSize, nKvHeads, HW) f16 pairs
@group(0) @binding(2) var<storage, read> blockTable: array<u32>;   // (numSeqs, maxPagesPerSeq) physical pages
@group(0) @binding(3) var<storage, read> tokenSeq: array<u32>;     // (T) block-table row of each query token
@group(0) @binding(4) var<storage, read> positions: array<u32>;    // (T) absolute position of each query token
@group(0) @binding(5) var<storage, read_write> mass: array<f32>;   // (T, nHeads) share of mass outside the window
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> laneMax: array<f32, LANES>;
var<workgroup> laneSum: array<f32, LANES>;
var<workgroup> laneOut: array<f32, LANES>;

@compute @workgroup_size(LANES)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let th = wid.y * nwg.x + wid.x; // t * nHeads + h (local head)
  if (th >= p.tokens * p.nHeads) { return; }
  let t = th / p.nHeads;
  let h = th - t * p.nHeads;
  let kvh = h / p.group;
  let seq = tokenSeq[t];
  let pos = positions[t];
  let qo = (t * p.qRowHeads + p.qHeadOffset + h) * HW;
  var qv: array<vec2<f32>, HW>;
  for (var w = 0u; w < HW; w++) { qv[w] = q[qo + w] * p.scale; }
  var m = NEG_BIG;
  var l = 0.0;
  var lo = 0.0;
  for (var j = lid; j <= pos; j += LANES) {
    let page = blockTable[seq * p.maxPagesPerSeq + j / p.pageSize];
    let b = ((page * p.pageSize + j % p.pageSize) * p.nKvHeads + kvh) * HW;
    var s2 = vec2<f32>(0.0);
    for (var w = 0u; w < HW; w++) { s2 += qv[w] * unpack2x16float(kCache[b + w]); }
    let s = s2.x + s2.y;
    let mNew = max(m, s);
    let alpha = exp(m - mNew);
    let pr = exp(s - mNew);
    l = l * alpha + pr;
    lo *= alpha;
    if (j >= p.sink && j + p.local <= pos) { lo += pr; }
    m = mNew;
  }
  laneMax[lid] = m;
  laneSum[lid] = l;
  laneOut[lid] = lo;
  workgroupBarrier();
  if (lid == 0u) {
    var gm = NEG_BIG;
    for (var i = 0u; i < LANES; i++) { gm = max(gm, laneMax[i]); }
    var gl = 0.0;
    var glo = 0.0;
    for (var i = 0u; i < LANES; i++) {
      let f = exp(laneMax[i] - gm);
      gl += laneSum[i] * f;
      glo += laneOut[i] * f;
    }
    mass[th] = glo / gl;
  }
}
