//#if SUBGROUPS
enable subgroups;
//#endif
// Prefill attention, FlashAttention-2 style, over the packed-f16 paged KV cache: one workgroup per (query tile,
// KV head). A query tile is up to BQ consecutive tokens of one sequence (tiles: [row, firstToken, firstPos, count,
// listRow, firstNew]); its R = BQ * G rows are (token, query head) for the G query heads sharing the KV head, row
// r = token r / G, head r % G. Each row keeps its query, output accumulator and online softmax (lib/softmax.wgsl)
// in registers and rescales once per key tile of up to BK keys; every key and value is read once per query tile.
// Key tiles are aligned to multiples of BK, which divides the page size, so a tile is BK consecutive slots of one
// page: one block-table lookup per tile, none per key.
// Two layouts (SHARED):
//   SHARED (GPUs): SPLIT threads per row (each holds PW = HW / SPLIT pairs of the query and accumulator; a score is
//     summed across the row's threads with subgroupShuffleXor); the workgroup loads each key tile into workgroup
//     memory once, unpacked to f32, consecutive threads reading consecutive words (coalesced), between barriers.
//   otherwise (CPU adapters): QB rows per invocation (a register block of QB rows x the tile's keys: each key and
//     value element is read and unpacked once for QB rows) and no workgroup memory nor barrier: the SIMD lanes of
//     the CPU are invocations, and every lane reads the same key word, which the compiler loads once and
//     broadcasts. QUAD: the head-dim loops step over vec4 units (UW = 4), half the trip count, so the compiler
//     unrolls them and the rows' arrays are indexed by constants; SDOT: a row's score is summed by fma chains into
//     one float (QB floats live instead of QB vec4s). SPLIT > 1 (large head dims, SUBGROUPS): the SPLIT lanes of a
//     subgroup share the QB rows, each holding PW pairs of their queries and accumulators and reading its own PW
//     pairs of each key and value; scores summed with subgroupShuffleXor as with SHARED, still no workgroup memory.
// Keys a tile covers, by its KV head's mode (modes):
//   0 dense:        [0, lastPos]
//   1 block-sparse: the key blocks blockList[listRow, kvh] lists, [c*BS, c*BS + BS) clipped to <= lastPos
//   2 Lambda:       [0, min(sink, lastPos + 1)) and [max(sink, firstPos + 1 - local), lastPos]
// and each row masks token-exactly: key j is visible to the row at position pos iff j <= pos and (Lambda) j < sink
// or j > pos - local, and, in a layer with a sliding window w > 0, j > pos - w (every mode). Segments start at the
// tile's first row's window (keys older than it are masked for every row: never visited). Key tiles wholly visible
// to every row fold without a per-key test; the others (diagonal, window edges) fold only visible keys. Keys past a
// segment's end are never read, so NaN in unused cache slots never reaches the output. Scores are soft-capped
// (softcap > 0, Gemma 2) before the softmax.
// STREAM (the streaming heads' pool, every head Lambda): the cache is the streaming pool's sink pages + ring, the
// table its stream table (rows of sinkPages + ringPages pages; position j >= sink lives in ring page
// ((j - sink) / pageSize) mod ringPages at slot (j - sink) mod pageSize), and the step's own keys, positions >=
// firstNew (the sequence's first position in the step), come from the fresh f32 k/v rows (kFresh, vFresh: row of
// position j = firstToken + j - firstPos), since the ring is written after attention (a chunk longer than the ring
// would overwrite keys its own earlier tokens need). Each of Lambda's two segments is split at firstNew into a cached
// and a fresh part; a cached key tile is BK consecutive slots of one page in storage order.
//#include lib/grid
//#include lib/paged
//#include lib/softmax

struct Params {
  nHeads: u32,          // query heads processed: nKvHeads * group
  nKvHeads: u32,        // KV heads of the cache
  group: u32,           // G: query heads per KV head
  pageSize: u32,        // tokens per cache page (a multiple of BK)
  maxPagesPerSeq: u32,  // block table row length
  numTiles: u32,        // query tiles in tiles
  blockSize: u32,       // BS: tokens per key block of the block lists
  listStride: u32,      // u32 words per (list row, KV head) entry of blockList
  sink: u32,            // Lambda: sink tokens
  local: u32,           // Lambda: local window (>= 1: a token always sees itself)
  scale: f32,           // softmax scale, usually 1 / sqrt(headDim)
  qHeadOffset: u32,     // first query head of q/out rows processed
  qRowHeads: u32,       // query heads per q/out row
  window: u32,          // the layer's sliding window in keys (0: none)
  softcap: f32,         // attention logit soft-cap (0: none)
  sinkPages: u32,       // STREAM: sink pages per stream-table row (ceil(sink / pageSize))
  ringPages: u32,       // STREAM: ring pages per stream-table row
  kvHeadOffset: u32,    // STREAM: fresh k/v row head of cache head 0
  kvRowHeads: u32,      // STREAM: heads per fresh k/v row
  modes: array<vec4<u32>, 16>, // per KV head: 0 dense, 1 block-sparse, 2 Lambda
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;      // (T, qRowHeads, HW) f32 pairs after RoPE
@group(0) @binding(1) var<storage, read> kCache: array<u32>;       // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs kCache
@group(0) @binding(2) var<storage, read> vCache: array<u32>;       // (numPages, pageSize, nKvHeads, HW) f16 pairs
//#slabs vCache
@group(0) @binding(3) var<storage, read> blockTable: array<u32>;   // (numSeqs, maxPagesPerSeq) pages; STREAM: stream table
@group(0) @binding(4) var<storage, read> tiles: array<u32>;        // (numTiles, 6): [row, firstToken, firstPos, count, listRow, firstNew]
@group(0) @binding(5) var<storage, read> blockList: array<u32>;    // (listRows, nKvHeads, listStride): count, blocks
@group(0) @binding(6) var<storage, read_write> out: array<vec2<f32>>; // (T, qRowHeads, HW) f32 pairs
@group(0) @binding(7) var<uniform> p: Params;
//#if STREAM
@group(0) @binding(8) var<storage, read> kFresh: array<vec2<f32>>; // (T, kvRowHeads, HW) f32 pairs after RoPE
@group(0) @binding(9) var<storage, read> vFresh: array<vec2<f32>>; // (T, kvRowHeads, HW) f32 pairs
//#endif

const HD: u32 = $HD;          // head dim (pipelines are specialised per head dim), even
const HW: u32 = HD / 2u;      // f16 / f32 pairs per head vector
const G: u32 = $G;            // query heads per KV head
const BQ: u32 = $BQ;          // query tokens per tile
const R: u32 = BQ * G;        // rows per workgroup
const SPLIT: u32 = $SPLIT;    // threads per row, consecutive lanes of one subgroup (divides HW)
const PW: u32 = HW / SPLIT;   // pairs per thread
const UW: u32 = $UW;          // floats per unit of a thread's head-dim loops: 2 (pairs) or 4 (QUAD: two pairs)
const NU: u32 = PW * 2u / UW; // units per thread
alias U = vec$UW<f32>;
//#if SDOT
alias D = f32;                // SDOT: a row's partial score, one float summed by fma chains (few registers live)
//#else
alias D = U;                  // a row's partial score, summed over the unit's lanes once per key
//#endif
const QB: u32 = $QB;          // rows per thread (divides R; 1 with SHARED): a key element read once serves QB rows
const WG: u32 = R / QB * SPLIT; // threads per workgroup
const BK: u32 = $BK;          // keys per key tile (divides the page size)
const MODE_SPARSE: u32 = 1u;
const MODE_LAMBDA: u32 = 2u;

//#if SHARED
var<workgroup> kt: array<vec2<f32>, BK * HW>;  // the key tile, f32 pairs
var<workgroup> vt: array<vec2<f32>, BK * HW>;  // the value tile
//#endif

// Per row k of this thread's QB rows:
var<private> qv: array<array<U, NU>, QB>;   // this thread's units of the row's query, times scale
var<private> acc: array<array<U, NU>, QB>;  // this thread's units of sum_j exp(s_j - m) v_j
var<private> st: array<Softmax, QB>;
var<private> sc: array<array<f32, BK>, QB>;         // scores of the current key tile
var<private> tmax: array<f32, QB>;                  // largest visible score of the current key tile
var<private> pj: array<f32, QB>;                    // weight of the current key (0: masked)
var<private> vis: array<bool, QB>;                  // whether the current key is visible
var<private> rowPos: array<u32, QB>;  // the row's position (past lastPos for rows of missing tokens: never written)
var<private> off: u32;                // this thread's first pair of its rows: part * PW

// The query tile (workgroup-uniform: with SHARED the key loops it controls hold barriers).
struct Ctx {
  seq: u32,       // block-table row
  kvh: u32,       // KV head
  mode: u32,      // 0 dense, 1 block-sparse, 2 Lambda
  firstPos: u32,  // position of the tile's first token
  lastPos: u32,   // position of its last token
  firstToken: u32, // batch row of the tile's first token
  firstNew: u32,  // STREAM: the sequence's first position in this step (keys at or past it are fresh)
}

// Where a key tile's keys are: element 0 of its first key, in u32 words of the cache (f16 pairs) or, fresh, in f32
// pairs of kFresh / vFresh; the tile's keys follow at a stride of `stride` words / pairs.
struct Src {
  base: u32,
  stride: u32,
  fresh: bool,
}

// Slot of key j in storage order: its block-table position; STREAM: the sink's slots, then the ring's from
// sinkPages * pageSize on.
fn storagePos(j: u32) -> u32 {
//#if STREAM
  if (j >= p.sink) { return p.sinkPages * p.pageSize + (j - p.sink); }
//#endif
  return j;
}

// Keys from j0 on that a key tile may hold: to the next multiple of BK in storage order (a tile never crosses a
// page), or of BK positions for fresh keys.
fn tileRun(j0: u32, fresh: bool) -> u32 {
  return BK - select(storagePos(j0), j0, fresh) % BK;
}

// The key tile starting at key j0 (cached: one block-table lookup per tile, none per key).
fn tileSrc(c: Ctx, j0: u32, fresh: bool) -> Src {
//#if STREAM
  if (fresh) {
    let row = c.firstToken + j0 - c.firstPos;
    return Src((row * p.kvRowHeads + p.kvHeadOffset + c.kvh) * HW, p.kvRowHeads * HW, true);
  }
  let sp = storagePos(j0);
  let lp = sp / p.pageSize;
  let entry = select(p.sinkPages + (lp - p.sinkPages) % p.ringPages, lp, lp < p.sinkPages);
  let page = blockTable[c.seq * p.maxPagesPerSeq + entry];
  return Src(slotWord(page, sp % p.pageSize, c.kvh), p.nKvHeads * HW, false);
//#else
  let page = blockTable[c.seq * p.maxPagesPerSeq + j0 / p.pageSize];
  return Src(slotWord(page, j0 % p.pageSize, c.kvh), p.nKvHeads * HW, false);
//#endif
}

// Unit u of this thread's share (pairs off.. ) of key j of the current tile, and of its value.
fn kUnit(t: Src, j: u32, u: u32) -> U {
//#if SHARED
  return kt[j * HW + off + u];
//#else
//#if QUAD
  let b = t.base + j * t.stride + off + 2u * u;
  return vec4<f32>(unpack2x16float(kCacheLoad(b)), unpack2x16float(kCacheLoad(b + 1u)));
//#else
  return unpack2x16float(kCacheLoad(t.base + j * t.stride + off + u));
//#endif
//#endif
}

fn vUnit(t: Src, j: u32, u: u32) -> U {
//#if SHARED
  return vt[j * HW + off + u];
//#else
//#if QUAD
  let b = t.base + j * t.stride + off + 2u * u;
  return vec4<f32>(unpack2x16float(vCacheLoad(b)), unpack2x16float(vCacheLoad(b + 1u)));
//#else
  return unpack2x16float(vCacheLoad(t.base + j * t.stride + off + u));
//#endif
//#endif
}

// Unit u of an f32-pair row at pair b (q, fresh k/v rows).
fn pairsUnit(x: ptr<storage, array<vec2<f32>>, read>, b: u32, u: u32) -> U {
//#if QUAD
  return vec4<f32>((*x)[b + 2u * u], (*x)[b + 2u * u + 1u]);
//#else
  return (*x)[b + u];
//#endif
}

//#if SHARED
// Loads the n keys of tile t into workgroup memory, consecutive threads reading consecutive words. Every thread
// calls it (workgroup-uniform control flow).
fn loadTile(lid: u32, t: Src, n: u32) {
  workgroupBarrier(); // the previous tile is consumed
  for (var e = lid; e < n * HW; e += WG) {
    let j = e / HW;
    let b = t.base + j * t.stride + (e - j * HW);
//#if STREAM
    if (t.fresh) {
      kt[e] = kFresh[b];
      vt[e] = vFresh[b];
      continue;
    }
//#endif
    kt[e] = unpack2x16float(kCacheLoad(b));
    vt[e] = unpack2x16float(vCacheLoad(b));
  }
  workgroupBarrier();
}
//#endif

// Whether key j is visible to the row at position pos.
fn visible(c: Ctx, j: u32, pos: u32) -> bool {
  var ok = j <= pos;
  if (c.mode == MODE_LAMBDA) { ok = ok && (j < p.sink || j + p.local > pos); }
  if (p.window > 0u) { ok = ok && j + p.window > pos; }
  return ok;
}

// A key tile folds in two passes: scores (noteKey per key), one rescale (rescaleRows), weighted values (weighKey
// per key). fast: every key of the tile is visible to every row, so no key is tested. A masked key adds nothing,
// whatever its score or value (a later token's, in the diagonal tile): its weight is selected to 0 and its value
// never added.

// d + q . k over one unit, as one float (SDOT: a chain of fma) or a unit of partial sums.
fn dotAdd(d: D, qu: U, kk: U) -> D {
//#if SDOT
//#if QUAD
  return fma(qu.w, kk.w, fma(qu.z, kk.z, fma(qu.y, kk.y, fma(qu.x, kk.x, d))));
//#else
  return fma(qu.y, kk.y, fma(qu.x, kk.x, d));
//#endif
//#else
  return d + qu * kk;
//#endif
}

// Key j0 + j scored d[k] (this thread's partial dot products) by row k: its masked score and the tile max.
fn noteKey(c: Ctx, j0: u32, j: u32, fast: bool, d: array<D, QB>) {
  for (var k = 0u; k < QB; k++) {
//#if SDOT
    var s = d[k];
//#else
    var s = dot(d[k], U(1.0));
//#endif
//#if SUBGROUPS
    for (var o = 1u; o < SPLIT; o <<= 1u) { s += subgroupShuffleXor(s, o); }
//#endif
    s = softcap(s, p.softcap);
    let v = fast || visible(c, j0 + j, rowPos[k]);
    sc[k][j] = select(NEG_BIG, s, v);
    tmax[k] = select(tmax[k], max(tmax[k], s), v);
  }
}

// Rescales every row to its running max after a tile's scores; resets the tile max.
fn rescaleRows() {
  for (var k = 0u; k < QB; k++) {
    st[k] = softmaxRescale(st[k], tmax[k]);
    for (var u = 0u; u < NU; u++) { acc[k][u] *= st[k].alpha; }
    tmax[k] = NEG_BIG;
  }
}

// Weights of key j0 + j per row, added to the rows' sums; pj and vis for the values.
fn weighKey(c: Ctx, j0: u32, j: u32, fast: bool) {
  for (var k = 0u; k < QB; k++) {
    vis[k] = fast || visible(c, j0 + j, rowPos[k]);
    pj[k] = select(0.0, exp(sc[k][j] - st[k].m), vis[k]);
    st[k].l += pj[k];
  }
}

// Folds keys j0 .. j0 + n - 1 (n <= BK, key tile kb) into this thread's rows.
fn foldTile(c: Ctx, kb: Src, j0: u32, n: u32, fast: bool) {
  for (var j = 0u; j < n; j++) {
    var d = array<D, QB>(); // zeroed explicitly: a bare `var d: T;` here was not re-zeroed per key (Dawn, lavapipe)
    for (var u = 0u; u < NU; u++) {
      let kk = kUnit(kb, j, u);
      for (var k = 0u; k < QB; k++) { d[k] = dotAdd(d[k], qv[k][u], kk); }
    }
    noteKey(c, j0, j, fast, d);
  }
  rescaleRows();
  for (var j = 0u; j < n; j++) {
    weighKey(c, j0, j, fast);
    for (var u = 0u; u < NU; u++) {
      let vv = vUnit(kb, j, u);
      for (var k = 0u; k < QB; k++) { acc[k][u] += select(U(0.0), pj[k] * vv, vis[k]); }
    }
  }
}

//#if STREAM
//#if !SHARED
// foldTile over a fresh tile (f32 k/v rows): a copy, so that no loop over the head dim holds a branch on the source.
fn foldFresh(c: Ctx, kb: Src, j0: u32, n: u32, fast: bool) {
  for (var j = 0u; j < n; j++) {
    var d = array<D, QB>(); // zeroed explicitly: a bare `var d: T;` here was not re-zeroed per key (Dawn, lavapipe)
    for (var u = 0u; u < NU; u++) {
      let kk = pairsUnit(&kFresh, kb.base + j * kb.stride + off, u);
      for (var k = 0u; k < QB; k++) { d[k] = dotAdd(d[k], qv[k][u], kk); }
    }
    noteKey(c, j0, j, fast, d);
  }
  rescaleRows();
  for (var j = 0u; j < n; j++) {
    weighKey(c, j0, j, fast);
    for (var u = 0u; u < NU; u++) {
      let vv = pairsUnit(&vFresh, kb.base + j * kb.stride + off, u);
      for (var k = 0u; k < QB; k++) { acc[k][u] += select(U(0.0), pj[k] * vv, vis[k]); }
    }
  }
}
//#endif
//#endif

// Segment e of the tile's key set (modes above): keys [lo, hi), whether they are all sinks (visible to every row at
// or past them) and whether they are fresh (STREAM). Dense: one segment; block-sparse: one per listed key block;
// Lambda: sink, window; STREAM: each of those split at firstNew, cached part first. nSegments gives the count.
struct Seg {
  lo: u32,
  hi: u32,
  sink: bool,
  fresh: bool,
}

fn nSegments(c: Ctx, lb: u32) -> u32 {
  if (c.mode == MODE_SPARSE) { return blockList[lb]; }
//#if STREAM
  return 4u;
//#else
  if (c.mode == MODE_LAMBDA) { return 2u; }
  return 1u;
//#endif
}

fn segment(c: Ctx, lb: u32, e: u32) -> Seg {
  let end = c.lastPos + 1u;
  if (c.mode == MODE_SPARSE) {
    let lo = blockList[lb + 1u + e] * p.blockSize;
    return Seg(lo, min(lo + p.blockSize, end), false, false);
  }
  if (c.mode == MODE_LAMBDA) {
//#if STREAM
    let part = e / 2u;
//#else
    let part = e;
//#endif
    let sinkEnd = min(p.sink, end);
    var s = Seg(0u, sinkEnd, true, false);
    if (part == 1u) {
      let win = select(0u, c.firstPos + 1u - p.local, c.firstPos + 1u > p.local);
      s = Seg(max(sinkEnd, win), end, false, false);
    }
//#if STREAM
    if (e % 2u == 0u) {
      s.hi = min(s.hi, c.firstNew);
    } else {
      s.lo = max(s.lo, c.firstNew);
      s.fresh = true;
    }
//#endif
    return s;
  }
  return Seg(0u, end, false, false);
}

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = workgroupIndex(grid); // tile * nKvHeads + kvh
  if (idx >= p.numTiles * p.nKvHeads) { return; }
  let tile = idx / p.nKvHeads;
  let kvh = idx - tile * p.nKvHeads;
  let tb = tile * 6u;
  let count = tiles[tb + 3u];
  let firstPos = tiles[tb + 2u];
  let c = Ctx(
    tiles[tb], kvh, p.modes[kvh / 4u][kvh % 4u], firstPos, firstPos + count - 1u, tiles[tb + 1u], tiles[tb + 5u],
  );
  let row0 = lid / SPLIT * QB; // this thread's rows: row0 .. row0 + QB - 1, row r = (token r / G, head r % G)
  off = (lid % SPLIT) * PW;
  var qo: array<u32, QB>;
  for (var k = 0u; k < QB; k++) {
    let row = row0 + k;
    let i = row / G;
    let h = kvh * G + (row - i * G); // local query head
    rowPos[k] = firstPos + i;
    let t = c.firstToken + min(i, count - 1u);
    qo[k] = (t * p.qRowHeads + p.qHeadOffset + h) * HW + off;
    for (var u = 0u; u < NU; u++) { qv[k][u] = pairsUnit(&q, qo[k], u) * p.scale; }
    st[k] = SOFTMAX_EMPTY;
    tmax[k] = NEG_BIG;
  }
  // Keys below fastEnd and at or past fastStart are visible to every row of the tile: causal up to the tile's first
  // position; Lambda: inside every row's window (keys > lastPos - local) or a sink.
  var fastStart = 0u;
  if (c.mode == MODE_LAMBDA && c.lastPos + 1u > p.local) { fastStart = c.lastPos + 1u - p.local; }
  let fastEnd = c.firstPos + 1u;
  // The sliding window: keys below winLo are masked for every row (the first row's window starts there), keys at or
  // past winFast visible to every row (the last row's window starts there).
  var winLo = 0u;
  var winFast = 0u;
  if (p.window > 0u) {
    if (c.firstPos + 1u > p.window) { winLo = c.firstPos + 1u - p.window; }
    if (c.lastPos + 1u > p.window) { winFast = c.lastPos + 1u - p.window; }
  }
  let lb = (tiles[tb + 4u] * p.nKvHeads + kvh) * p.listStride;
  let ns = nSegments(c, lb);
  for (var e = 0u; e < ns; e++) {
    let r = segment(c, lb, e);
    // Lambda's sink segment is wholly visible (up to the causal edge, within the window): every key < sink.
    let edge = max(select(fastStart, 0u, r.sink), winFast);
    var j0 = max(r.lo, winLo);
    while (j0 < r.hi) {
      let j1 = min(r.hi, j0 + tileRun(j0, r.fresh));
      let kb = tileSrc(c, j0, r.fresh);
//#if SHARED
      loadTile(lid, kb, j1 - j0);
//#endif
      let fast = j1 <= fastEnd && j0 >= edge;
//#if STREAM
//#if !SHARED
      if (r.fresh) {
        foldFresh(c, kb, j0, j1 - j0, fast);
        j0 = j1;
        continue;
      }
//#endif
//#endif
      foldTile(c, kb, j0, j1 - j0, fast);
      j0 = j1;
    }
  }
  for (var k = 0u; k < QB; k++) {
    if (rowPos[k] <= c.lastPos) {
      let norm = softmaxInv(st[k].l);
      for (var u = 0u; u < NU; u++) {
        let a = acc[k][u] * norm;
//#if QUAD
        out[qo[k] + 2u * u] = a.xy;
        out[qo[k] + 2u * u + 1u] = a.zw;
//#else
        out[qo[k] + u] = a;
//#endif
      }
    }
  }
}
