// Token sampling on the device: one workgroup of WG threads per logits row, the rule of SampleSpec
// (model/executor.ts) as engine/sampler.ts sampleLogits runs it on the host, in f32:
//   l = logits + bias (sparse); temperature 0: argmax (lowest id on ties); else w = exp((l - max l) / temperature)
//   - no top-k / top-p: the first token, in id order, whose cumulative w exceeds u * sum(w);
//   - else, in the order (l desc, id asc) = descending order-preserving u32 keys of l: top-k = the first k tokens,
//     top-p = the shortest prefix of those whose w reaches topP of theirs, and the token = the first of the kept
//     set whose cumulative w exceeds u times the kept set's w. Each cut is a radix search over the keys, 4 bits per
//     round (8 rounds): per round every thread bins the w (or count) of the tokens matching the key prefix found so
//     far into 16 digits, the bins are summed across the workgroup in a fixed order, and the digit where the
//     cumulative sum crosses the goal extends the prefix. A cut inside a run of equal keys keeps the run's
//     lowest ids (`rank` of them); the next search counts those as a whole (the floor).
// Sums run in a fixed order, so the same row, spec and draw give the same token every time. Rows whose spec is
// disabled are left alone (the host samples them). Scratch: keys (R, V) u32 and weights (R, V) f32.

const WG: u32 = $WG;
const BINS: u32 = 16u;

struct Params {
  rows: u32,   // R
  vocab: u32,  // V
  _p0: u32,
  _p1: u32,
}

// One row's spec (8 words; shaders/sample.ts packs it).
struct RowSpec {
  temperature: f32,
  topK: u32,       // 0 = off
  topP: f32,       // >= 1 = off
  u: f32,          // the step's uniform draw in [0, 1)
  biasOffset: u32, // first entry of `bias`
  biasCount: u32,
  enabled: u32,    // 0: the host samples this row
  _p: u32,
}

// A search's running state, broadcast from thread 0.
struct SearchState {
  prefix: u32, // key bits found so far (all 32 after 8 rounds)
  above: f32,  // sum of the tokens ordered before the prefix's range
  count: u32,  // tokens in the chosen digit's bin (after the last round: tokens at the key)
  past: u32,   // 1: the goal was past the end (rounding): the search takes the last token
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;          // (R, V) raw logits
@group(0) @binding(1) var<storage, read> specs: array<RowSpec>;       // (R)
@group(0) @binding(2) var<storage, read> bias: array<vec2<u32>>;      // (entries) (token id, f32 bits of the delta)
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;    // (R) the sampled token of each enabled row
@group(0) @binding(4) var<storage, read_write> keys: array<u32>;      // (R, V) scratch: order keys of l
@group(0) @binding(5) var<storage, read_write> weights: array<f32>;   // (R, V) scratch: l, then w
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> redF: array<f32, WG>;
var<workgroup> redU: array<u32, WG>;
var<workgroup> binF: array<f32, BINS * WG>; // (digit, thread) partial sums of a round
var<workgroup> binU: array<u32, BINS * WG>; // (digit, thread) partial counts
var<workgroup> wgSpec: RowSpec;
var<workgroup> wgState: SearchState;
var<workgroup> wgF: f32;
var<workgroup> wgU: vec2<u32>;

// Unsigned order = float order; NaN lowest.
fn orderKey(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return 0u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn keyValue(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

// l[i]: the biased copy in the scratch when the row has a bias, else the logits themselves.
fn logitAt(i: u32, biased: bool) -> f32 {
  if (biased) { return weights[i]; }
  return logits[i];
}

fn crosses(x: f32, goal: f32, strict: bool) -> bool {
  return select(x >= goal, x > goal, strict);
}

// Sum over the workgroup of each thread's x, in a fixed order (a tree over thread index).
fn sumAll(x: f32, lid: u32) -> f32 {
  redF[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (lid < s) { redF[lid] += redF[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { wgF = redF[0]; }
  return workgroupUniformLoad(&wgF);
}

// Where the cumulative w (useW) or count of the tokens above the floor crosses `goal`, in (key desc, id asc)
// order: the key, the sum above it, and the rank among the tokens at that key. Floor: tokens with key < fKey are
// left out, and of those at fKey only the first fTies (weighing fW each) count.
fn search(lid: u32, base: u32, V: u32, useW: bool, hasFloor: bool, fKey: u32, fTies: u32, fW: f32, goal: f32,
          strict: bool) -> SearchState {
  var st = SearchState(0u, 0.0, 0u, 0u);
  for (var round = 0u; round < 8u; round++) {
    let shift = 28u - 4u * round;
    // each thread bins into its own column of the workgroup arrays (private arrays live across the barriers of
    // this loop are not reliably kept by every compiler: lavapipe drops them)
    for (var d = 0u; d < BINS; d++) {
      binF[d * WG + lid] = 0.0;
      binU[d * WG + lid] = 0u;
    }
    for (var i = lid; i < V; i += WG) {
      let k = keys[base + i];
      if (hasFloor && k <= fKey) { continue; }
      if (round > 0u && (k >> (shift + 4u)) != st.prefix) { continue; }
      let d = (k >> shift) & 15u;
      binF[d * WG + lid] += select(1.0, weights[base + i], useW);
      binU[d * WG + lid] += 1u;
    }
    workgroupBarrier();
    if (lid < BINS) {
      var sm = 0.0;
      var sc = 0u;
      for (var t = 0u; t < WG; t++) {
        sm += binF[lid * WG + t];
        sc += binU[lid * WG + t];
      }
      redF[lid] = sm;
      redU[lid] = sc;
    }
    workgroupBarrier();
    if (lid == 0u) {
      if (hasFloor && (round == 0u || (fKey >> (shift + 4u)) == st.prefix)) {
        let d = (fKey >> shift) & 15u;
        redF[d] += f32(fTies) * fW;
        redU[d] += fTies;
      }
      var above = st.above;
      var chosen = BINS;
      var lowest = 0u;
      for (var dd = 0u; dd < BINS; dd++) {
        let d = BINS - 1u - dd;
        if (redU[d] == 0u) { continue; }
        lowest = d;
        if (st.past == 0u && crosses(above + redF[d], goal, strict)) {
          chosen = d;
          break;
        }
        above += redF[d];
      }
      var past = st.past;
      if (chosen == BINS) {
        chosen = lowest;
        above -= redF[lowest];
        past = 1u;
      }
      wgState = SearchState((st.prefix << 4u) | chosen, above, redU[chosen], past);
    }
    st = workgroupUniformLoad(&wgState);
  }
  return st;
}

// Writes the id of the rank-th (1-based) token with key `key`, in id order, to tokens[row].
fn writeNth(lid: u32, row: u32, base: u32, V: u32, key: u32, rank: u32) {
  let chunk = (V + WG - 1u) / WG;
  let lo = min(lid * chunk, V);
  let hi = min(lo + chunk, V);
  var c = 0u;
  for (var i = lo; i < hi; i++) { c += select(0u, 1u, keys[base + i] == key); }
  redU[lid] = c;
  workgroupBarrier();
  if (lid == 0u) {
    var seen = 0u;
    var owner = WG - 1u;
    var local = 0u;
    var lastOwner = 0u;
    var lastLocal = 0u;
    for (var t = 0u; t < WG; t++) {
      if (redU[t] > 0u) {
        lastOwner = t;
        lastLocal = redU[t];
      }
      if (seen + redU[t] >= rank) {
        owner = t;
        local = rank - seen;
        break;
      }
      seen += redU[t];
    }
    if (local == 0u) {
      owner = lastOwner;
      local = lastLocal;
    }
    wgU = vec2<u32>(owner, local);
  }
  let ol = workgroupUniformLoad(&wgU);
  if (lid == ol.x) {
    var seen = 0u;
    for (var i = lo; i < hi; i++) {
      if (keys[base + i] == key) {
        seen++;
        if (seen == ol.y) {
          tokens[row] = i;
          break;
        }
      }
    }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  if (row >= p.rows) { return; }
  if (lid == 0u) { wgSpec = specs[row]; }
  let sp = workgroupUniformLoad(&wgSpec);
  if (sp.enabled == 0u) { return; }
  let V = p.vocab;
  let base = row * V;

  // l = logits + bias (into the scratch, only when there is a bias); then max and argmax (lowest id on ties; NaN
  // never wins)
  let biased = sp.biasCount > 0u;
  if (biased) {
    for (var i = lid; i < V; i += WG) { weights[base + i] = logits[base + i]; }
    storageBarrier();
    workgroupBarrier();
    for (var b = lid; b < sp.biasCount; b += WG) {
      let e = bias[sp.biasOffset + b];
      if (e.x < V) { weights[base + e.x] += bitcast<f32>(e.y); }
    }
    storageBarrier();
    workgroupBarrier();
  }
  const NONE: u32 = 0xffffffffu;
  var best = 0.0;
  var bestId = NONE;
  for (var i = lid; i < V; i += WG) {
    let v = logitAt(base + i, biased);
    if (v == v && (bestId == NONE || v > best)) {
      best = v;
      bestId = i;
    }
  }
  redF[lid] = best;
  redU[lid] = bestId;
  workgroupBarrier();
  if (lid == 0u) {
    var mx = redF[0];
    var id = redU[0];
    for (var t = 1u; t < WG; t++) {
      let v = redF[t];
      let j = redU[t];
      if (j != NONE && (id == NONE || v > mx || (v == mx && j < id))) {
        mx = v;
        id = j;
      }
    }
    wgF = mx;
    wgU = vec2<u32>(select(id, 0u, id == NONE), 0u); // every logit NaN: token 0, as the host's argmax
  }
  let m = workgroupUniformLoad(&wgF);
  if (sp.temperature == 0.0) {
    if (lid == 0u) { tokens[row] = wgU.x; }
    return;
  }
  let invT = 1.0 / sp.temperature;
  // keys and weights
  for (var i = lid; i < V; i += WG) {
    let l = logitAt(base + i, biased);
    keys[base + i] = orderKey(l);
    var w = exp((l - m) * invT);
    if (!(w >= 0.0)) { w = 0.0; } // NaN logits weigh nothing
    weights[base + i] = w;
  }
  storageBarrier();
  workgroupBarrier();

  let k = min(sp.topK, V);
  if (k == 0u && sp.topP >= 1.0) {
    // every token, in id order: per-thread contiguous chunks, their sums, the chunk where u * Z falls
    let chunk = (V + WG - 1u) / WG;
    let lo = min(lid * chunk, V);
    let hi = min(lo + chunk, V);
    var s = 0.0;
    for (var i = lo; i < hi; i++) { s += weights[base + i]; }
    redF[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
      var z = 0.0;
      for (var t = 0u; t < WG; t++) { z += redF[t]; }
      let goal = sp.u * z;
      var acc = 0.0;
      var owner = WG;
      var lastOwner = 0u;
      var start = 0.0;
      for (var t = 0u; t < WG; t++) {
        if (redF[t] > 0.0) { lastOwner = t; }
        if (owner == WG && acc + redF[t] > goal) {
          owner = t;
          start = acc;
        }
        acc += redF[t];
      }
      if (owner == WG) {
        owner = lastOwner;
        start = -1.0; // past the end: the owner takes its last token with weight
      }
      wgU = vec2<u32>(owner, 0u);
      wgF = start;
      redF[0] = goal;
    }
    let own = workgroupUniformLoad(&wgU);
    let start = workgroupUniformLoad(&wgF);
    if (lid == own.x) {
      let goal = redF[0];
      var cum = start;
      var last = lo;
      var found = false;
      for (var i = lo; i < hi; i++) {
        let w = weights[base + i];
        if (w > 0.0) { last = i; }
        cum += w;
        if (start >= 0.0 && goal < cum) {
          tokens[row] = i;
          found = true;
          break;
        }
      }
      if (!found) { tokens[row] = last; }
    }
    return;
  }

  // top-k: the key where the count reaches k; the kept weight z
  var hasFloor = false;
  var fKey = 0u;
  var fTies = 0u;
  var fW = 0.0;
  var zLocal = 0.0;
  if (k > 0u && k < V) {
    let c = search(lid, base, V, false, false, 0u, 0u, 0.0, f32(k), false);
    hasFloor = true;
    fKey = c.prefix;
    fTies = min(c.count, max(1u, k - u32(c.above)));
    fW = exp((keyValue(fKey) - m) * invT);
    for (var i = lid; i < V; i += WG) { zLocal += select(0.0, weights[base + i], keys[base + i] > fKey); }
  } else {
    for (var i = lid; i < V; i += WG) { zLocal += weights[base + i]; }
  }
  var z = sumAll(zLocal, lid) + f32(fTies) * fW;
  // top-p within the top-k set
  if (sp.topP < 1.0) {
    let c = search(lid, base, V, true, hasFloor, fKey, fTies, fW, sp.topP * z, false);
    let tieW = exp((keyValue(c.prefix) - m) * invT);
    var rank = c.count;
    if (c.past == 0u && tieW > 0.0) {
      rank = clamp(u32(max(ceil((sp.topP * z - c.above) / tieW), 1.0)), 1u, c.count);
    }
    hasFloor = true;
    fKey = c.prefix;
    fTies = rank;
    fW = tieW;
    z = c.above + f32(rank) * tieW;
  }
  // the token: where u * z falls in the kept set
  let goal = sp.u * z;
  let c = search(lid, base, V, true, hasFloor, fKey, fTies, fW, goal, true);
  let tieW = exp((keyValue(c.prefix) - m) * invT);
  var rank = c.count;
  if (c.past == 0u && tieW > 0.0) {
    rank = clamp(u32(max(floor((goal - c.above) / tieW) + 1.0, 1.0)), 1u, c.count);
  }
  writeNth(lid, row, base, V, c.prefix, rank);
}
