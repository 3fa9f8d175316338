// Streaming-head attention (StreamingLLM / DuoAttention Lambda mask), decode and prefill in one dispatch.
// Query token t (stream-table row tokenSeq[t], position pos = positions[t]) and local query head h attend to
//   keys [0, min(sink, pos + 1))  U  [max(sink, pos + 1 - local), pos]      (exactly the `local` newest incl. itself)
// of KV head h / group; in a layer with a sliding window w > 0, only those also in the window (j > pos - w); scores
// soft-capped when softcap > 0 (Gemma 2). A key at position j >= firstNew = positions[freshStart[t]] (this batch's first new token of
// the sequence) comes from the fresh activations, row freshStart[t] + (j - firstNew), in f32; an older key comes
// from the streaming pool (f16 pairs) through the stream table:
//   j < sink:  page = streamTable[seq, j / pageSize],                                  slot j % pageSize
//   j >= sink: page = streamTable[seq, sinkPages + ((j - sink) / pageSize) % ringPages], slot (j - sink) % pageSize
// so this kernel runs BEFORE the chunk's K/V is written into the ring (shaders/kv_write_streaming.ts).
// Head ranges: q/out rows hold qRowHeads heads, of which [qHeadOffset, qHeadOffset + nHeads) are processed; fresh
// k/v rows hold kvRowHeads heads, the cache's head kvh is row head kvHeadOffset + kvh.
// Lanes layout (lib/lanes_acc.wgsl): LANES invocations per (token, head); lane i takes keys i, i + LANES, ... of the
// key list into its own running softmax and f32 accumulator (no barrier in the key loop), merged once at the end.
// LANES = 8 suits lavapipe; 16-32 suits GPUs (shaders/streaming_attention.ts picks).
//#include lib/token_head
//#include lib/paged
//#include lib/lanes_acc

const HD: u32 = $HD;          // head dim, even
const HW: u32 = HD / 2u;      // f16 pairs / f32 pairs per head vector
const LANES: u32 = $LANES;

struct Params {
  tokens: u32,         // T
  nHeads: u32,         // query heads processed
  nKvHeads: u32,       // KV heads in the streaming cache
  group: u32,          // nHeads / nKvHeads
  pageSize: u32,       // tokens per streaming page
  sink: u32,           // sink tokens
  local: u32,          // local window (newest tokens, the query's own included)
  sinkPages: u32,      // ceil(sink / pageSize)
  ringPages: u32,      // ring pages per sequence
  scale: f32,          // softmax scale
  qHeadOffset: u32,    // first query head of q/out rows processed
  qRowHeads: u32,      // query heads per q/out row
  kvHeadOffset: u32,   // fresh k/v row head of cache head 0
  kvRowHeads: u32,     // heads per fresh k/v row
  window: u32,         // the layer's sliding window in keys (0: none)
  softcap: f32,        // attention logit soft-cap (0: none)
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;        // (T, qRowHeads, HW) f32 pairs, after RoPE
@group(0) @binding(1) var<storage, read> kFresh: array<vec2<f32>>;   // (T, kvRowHeads, HW) f32 pairs, after RoPE
@group(0) @binding(2) var<storage, read> vFresh: array<vec2<f32>>;   // (T, kvRowHeads, HW) f32 pairs
@group(0) @binding(3) var<storage, read> kCache: array<u32>;         // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs kCache
@group(0) @binding(4) var<storage, read> vCache: array<u32>;         // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs vCache
@group(0) @binding(5) var<storage, read> streamTable: array<u32>;    // (numSeqs, sinkPages + ringPages) pages
@group(0) @binding(6) var<storage, read> tokenSeq: array<u32>;       // (T) stream-table row of each token
@group(0) @binding(7) var<storage, read> positions: array<u32>;      // (T) absolute position of each token
@group(0) @binding(8) var<storage, read> freshStart: array<u32>;     // (T) batch row of the sequence's first new token
@group(0) @binding(9) var<storage, read_write> out: array<vec2<f32>>; // (T, qRowHeads, HW) f32 pairs
@group(0) @binding(10) var<uniform> p: Params;

// Word offset of cached position j of stream-table row seq, cache head kvh.
fn cacheWord(seq: u32, j: u32, kvh: u32) -> u32 {
  let row = seq * (p.sinkPages + p.ringPages);
  if (j < p.sink) { return slotWord(streamTable[row + j / p.pageSize], j % p.pageSize, kvh); }
  let r = j - p.sink;
  return slotWord(streamTable[row + p.sinkPages + (r / p.pageSize) % p.ringPages], r % p.pageSize, kvh);
}

// Folds the fresh (f32, this batch's) key and value at pair offset b into this lane's softmax.
fn foldFresh(b: u32) {
  var s2 = vec2<f32>(0.0);
  for (var w = 0u; w < HW; w++) { s2 += qv[w] * kFresh[b + w]; }
  st = softmaxFold(st, softcap(s2.x + s2.y, p.softcap));
  for (var w = 0u; w < HW; w++) { acc[w] = acc[w] * st.alpha + st.p * vFresh[b + w]; }
}

@compute @workgroup_size(LANES)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let th = tokenHeadOf(grid, 0u);
  if (!th.valid) { return; }
  let t = th.t;
  let kvh = th.kvh;
  let seq = tokenSeq[t];
  let pos = positions[t];
  let fs = freshStart[t];
  let firstNew = positions[fs];
  // the window's first key: sink keys before it are dropped, the local run starts no earlier
  let winStart = select(0u, pos + 1u - p.window, p.window > 0u && pos + 1u > p.window);
  let sinkEnd = min(p.sink, pos + 1u);
  let sinkStart = min(winStart, sinkEnd);
  let nSink = sinkEnd - sinkStart;
  var localStart = 0u;
  if (pos + 1u > p.local) { localStart = pos + 1u - p.local; }
  localStart = max(max(localStart, p.sink), winStart);
  var nLocal = 0u;
  if (pos + 1u > localStart) { nLocal = pos + 1u - localStart; }
  let nKeys = nSink + nLocal;
  let qo = (t * p.qRowHeads + p.qHeadOffset + th.h) * HW;
  let freshHead = p.kvHeadOffset + kvh;

  loadQuery(qo, p.scale);
  for (var i = lid; i < nKeys; i += LANES) {
    var j = sinkStart + i;
    if (i >= nSink) { j = localStart + (i - nSink); }
    if (j >= firstNew) {
      foldFresh(((fs + (j - firstNew)) * p.kvRowHeads + freshHead) * HW);
    } else {
      foldCached(cacheWord(seq, j, kvh), p.softcap);
    }
  }
  let g = mergeLanesAcc(lid);
  let norm = softmaxInv(g.l);
  for (var w = lid; w < HW; w += LANES) { out[qo + w] = mergedAcc(g, w) * norm; }
}
