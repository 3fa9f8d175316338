/**
 * The one online softmax every attention kernel uses (shaders/lib/softmax.wgsl), through both layouts that fold keys
 * with it (lib/lanes.wgsl + lib/lanes_acc.wgsl, lib/tile.wgsl) and through the split merge of
 * shaders/sparse_decode_reduce.wgsl, on the edge cases the kernels' former copies disagreed on: fully masked rows
 * (0, never NaN or inf), a first tile that is all masked (no sentinel score counted as a key), masked slots holding
 * NaN (never read), lanes or splits with no keys, scores far from 0 and spread over 1e8, equal scores; and a NaN in
 * a real key's value, which must reach the output.
 * A probe shader (below) runs the includes on crafted rows: row r's query against its own slots, each a real key or
 * masked; the reference is the plain softmax over the real keys in f64 (0 for none).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defineParams } from '../../shaders/lib/params.js';
import { preprocessWgsl, readShaderFile } from '../../shaders/lib/wgsl.js';
import { UniformArena } from '../../shaders/runtime.js';
import { f16ToF32, f32ToF16 } from '../../util/dtype.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { F16_NAN } from '../helpers/paged.js';
import { Rng } from '../helpers/rng.js';

const PROBE = `
struct Params {
  slots: u32,  // key slots per row
}

@group(0) @binding(0) var<storage, read> q: array<vec2<f32>>;          // (rows, HW) f32 pairs
@group(0) @binding(1) var<storage, read> kCache: array<u32>;           // (rows, slots, HW) f16 pairs
//#slabs kCache
@group(0) @binding(2) var<storage, read> vCache: array<u32>;           // (rows, slots, HW) f16 pairs
//#slabs vCache
@group(0) @binding(3) var<storage, read> mask: array<u32>;             // (rows, slots) 1: real key, 0: masked
@group(0) @binding(4) var<storage, read_write> out: array<vec2<f32>>;  // (rows, HW) f32 pairs
@group(0) @binding(5) var<storage, read> scales: array<f32>;          // (rows) softmax scale of each row
@group(0) @binding(6) var<uniform> p: Params;

const HW: u32 = $HW;

fn slotWordOf(r: u32, j: u32) -> u32 {
  if (mask[r * p.slots + j] == 0u) { return MASKED_KEY; }
  return (r * p.slots + j) * HW;
}

//#if TILE
//#include lib/tile
override WG: u32 = 8;
const DPW: u32 = $DPW;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x;
  loadQueryTile(lid, r * HW, scales[r]);
  for (var start = 0u; start < p.slots; start += WG) {
    let j = start + lid;
    var s = 0.0;
    var b = MASKED_KEY;
    if (j < p.slots) { b = slotWordOf(r, j); }
    if (b != MASKED_KEY) { s = scoreTile(b); }
    foldTile(lid, s, b);
  }
  let norm = softmaxInv(st.l);
  for (var c = 0u; c < DPW; c++) {
    let w = lid + c * WG;
    if (w < HW) { out[r * HW + w] = acc[c] * norm; }
  }
}
//#else
//#include lib/lanes_acc
const LANES: u32 = $LANES;

@compute @workgroup_size(LANES)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x;
  loadQuery(r * HW, scales[r]);
  for (var j = lid; j < p.slots; j += LANES) {
    let b = slotWordOf(r, j);
    if (b != MASKED_KEY) { foldCached(b, 0.0); }
  }
  let g = mergeLanesAcc(lid);
  let norm = softmaxInv(g.l);
  for (var w = lid; w < HW; w += LANES) { out[r * HW + w] = mergedAcc(g, w) * norm; }
}
//#endif
`;

const PROBE_PARAMS = defineParams('softmax_probe', { slots: 'u32' });
const HD = 6; // HW = 3 pairs: not a multiple of the lanes or the tile width
const HW = HD / 2;
const SLOTS = 20; // tiles of 8: [0, 8) [8, 16) [16, 20)

interface Row {
  what: string;
  real: boolean[]; // (SLOTS)
  k0: number[]; // (SLOTS) first key channel: the score is scale * k0 (the query is (1, 0, ...))
  scale: number;
  /** Put NaN in value channel 0 of this real slot. */
  nanValue?: number;
}

function rows(rng: Rng): Row[] {
  const all = (f: (j: number) => boolean) => Array.from({ length: SLOTS }, (_, j) => f(j));
  const k = (f: (j: number) => number) => Array.from({ length: SLOTS }, (_, j) => f(j));
  const normal = k(() => 2 * rng.normal());
  return [
    { what: 'all real', real: all(() => true), k0: normal, scale: 0.5 },
    { what: 'fully masked', real: all(() => false), k0: normal, scale: 0.5 },
    { what: 'first tile all masked, the second half masked', real: all((j) => j >= 12), k0: normal, scale: 0.5 },
    { what: 'one real key, the last slot', real: all((j) => j === SLOTS - 1), k0: normal, scale: 0.5 },
    { what: 'one real key, the first slot', real: all((j) => j === 0), k0: normal, scale: 0.5 },
    { what: 'every other slot masked', real: all((j) => j % 2 === 1), k0: normal, scale: 0.5 },
    { what: 'random half masked', real: all(() => rng.next() < 0.5), k0: normal, scale: 1 },
    {
      what: 'scores spread over 1e8 (the max dominates)',
      real: all((j) => j !== 7),
      k0: k(() => rng.int(-60000, 60000)),
      scale: 1000,
    },
    {
      what: 'scores near -1875 (far below 0, far above NEG_BIG)',
      real: all((j) => j % 3 !== 0),
      k0: k((j) => -60000 + 32 * (j % 5)),
      scale: 1 / 32,
    },
    { what: 'equal scores', real: all((j) => j % 4 !== 2), k0: k(() => 1), scale: 3 },
  ];
}

/** Keys and values of the rows as f16 bits: masked slots NaN throughout. */
function build(rng: Rng, rs: Row[]) {
  const kBits = new Uint16Array(rs.length * SLOTS * HD);
  const vBits = new Uint16Array(rs.length * SLOTS * HD);
  const mask = new Uint32Array(rs.length * SLOTS);
  const want = new Float32Array(rs.length * HD);
  rs.forEach((row, r) => {
    const scores: number[] = [];
    const values: number[][] = [];
    for (let j = 0; j < SLOTS; j++) {
      const o = (r * SLOTS + j) * HD;
      if (!row.real[j]) {
        kBits.fill(F16_NAN, o, o + HD);
        vBits.fill(F16_NAN, o, o + HD);
        continue;
      }
      mask[r * SLOTS + j] = 1;
      for (let d = 0; d < HD; d++) {
        kBits[o + d] = f32ToF16(d === 0 ? row.k0[j] : rng.normal());
        vBits[o + d] = f32ToF16(rng.normal());
      }
      if (row.nanValue === j) vBits[o] = F16_NAN;
      scores.push(row.scale * f16ToF32(kBits[o]));
      values.push(Array.from(vBits.subarray(o, o + HD), f16ToF32));
    }
    if (scores.length === 0) return; // no keys: 0
    const m = Math.max(...scores);
    const w = scores.map((s) => Math.exp(s - m));
    const l = w.reduce((a, b) => a + b, 0);
    for (let d = 0; d < HD; d++) want[r * HD + d] = values.reduce((a, v, i) => a + w[i] * v[d], 0) / l;
  });
  return { kBits, vBits, mask, want };
}

type Layout = { tile: true; wg: number } | { tile: false; lanes: number };
const LAYOUTS: Layout[] = [
  { tile: false, lanes: 4 },
  { tile: false, lanes: 8 },
  { tile: true, wg: 4 },
  { tile: true, wg: 8 },
];
const name = (l: Layout) => (l.tile ? `tile WG=${l.wg}` : `lanes LANES=${l.lanes}`);

async function runProbe(layout: Layout, rs: Row[], data: ReturnType<typeof build>): Promise<Float32Array> {
  const gpu = await testGpu();
  const defines: Record<string, number | boolean> = layout.tile
    ? { HW, TILE: true, DPW: Math.ceil(HW / layout.wg) }
    : { HW, LANES: layout.lanes };
  const read = (n: string) => (n === 'probe' ? PROBE : readShaderFile(n));
  const code = preprocessWgsl('probe', defines, read);
  const pipe = gpu.pipelineFromCode('softmax_probe', code, layout.tile ? { WG: layout.wg } : {}, PROBE_PARAMS);
  const q = new Float32Array(rs.length * HD);
  for (let r = 0; r < rs.length; r++) q[r * HD] = 1;
  const out = gpu.createBuffer('out', rs.length * HD * 4);
  const bindings = [
    f32Buffer(gpu, q),
    gpu.upload('k', data.kBits),
    gpu.upload('v', data.vBits),
    u32Buffer(gpu, data.mask),
    out,
    f32Buffer(
      gpu,
      Float32Array.from(rs, (row) => row.scale),
    ),
  ];
  const arena = new UniformArena(gpu);
  const u = arena.params(PROBE_PARAMS, { slots: SLOTS });
  gpu.run((pass) => gpu.dispatch(pass, pipe, [...bindings, u], rs.length), arena);
  const got = await gpu.readF32(out, rs.length * HD);
  assertNoGpuErrors(gpu);
  arena.destroy();
  return got;
}

test('online softmax, lanes and tile layouts: masked rows and tiles, NaN padding, extreme and equal scores', async () => {
  const rng = new Rng(11);
  const rs = rows(rng);
  const data = build(rng, rs);
  for (const layout of LAYOUTS) {
    const got = await runProbe(layout, rs, data);
    rs.forEach((row, r) => {
      const g = got.subarray(r * HD, (r + 1) * HD);
      const w = data.want.subarray(r * HD, (r + 1) * HD);
      // f32 exp and sums over <= 20 keys of f16 values: ~1e-7 absolute typically.
      assertClose(g, w, { atol: 2e-6, rtol: 1e-5 }, `${name(layout)}: ${row.what}`);
    });
  }
});

test('online softmax: a NaN in a real key reaches the output in both layouts (reads of padding stay visible)', async () => {
  const rng = new Rng(12);
  const real = Array.from({ length: SLOTS }, (_, j) => j % 3 !== 1);
  const k0 = Array.from({ length: SLOTS }, () => rng.normal());
  const rs: Row[] = [
    { what: 'NaN value', real, k0, scale: 1, nanValue: 5 },
    { what: 'clean', real, k0, scale: 1 },
  ];
  const data = build(rng, rs);
  for (const layout of LAYOUTS) {
    const got = await runProbe(layout, rs, data);
    assert.ok(Number.isNaN(got[0]), `${name(layout)}: channel 0 must be NaN, got ${got[0]}`);
    assertClose(got.subarray(HD), data.want.subarray(HD), { atol: 2e-6, rtol: 1e-5 }, `${name(layout)}: clean row`);
  }
});

test('split merge (sparse_decode_reduce.wgsl): empty splits add nothing, all-empty rows give 0', async () => {
  const gpu = await testGpu();
  const REDUCE = defineParams('sparse_decode_reduce', {
    count: 'u32',
    headDim: 'u32',
    numSplits: 'u32',
    nHeads: 'u32',
    qRowHeads: 'u32',
    qHeadOffset: 'u32',
    splitsWord: 'u32',
  });
  const NEG_BIG = Math.fround(-3.0e38);
  const hd = 4;
  const rng = new Rng(13);
  const acc = () => Array.from({ length: hd }, () => rng.normal());
  type Split = { m: number; l: number; acc: number[] };
  const empty: Split = { m: NEG_BIG, l: 0, acc: [0, 0, 0, 0] };
  const rowsOfSplits: [string, Split[]][] = [
    ['one real split between empty ones', [empty, { m: 2, l: 3, acc: acc() }, empty]],
    ['all splits empty', [empty, empty, empty]],
    ['a split at m = -1e30 next to m = 5', [{ m: -1e30, l: 1, acc: acc() }, { m: 5, l: 2, acc: acc() }, empty]],
    ['three real splits', [1, 3, 2].map((m, i) => ({ m, l: [2, 1, 4][i], acc: acc() }))],
    ['an empty split and one far below 0', [empty, { m: -2000, l: 1.5, acc: acc() }, { m: -2001, l: 1, acc: acc() }]],
  ];
  const numSplits = 3;
  const numRows = rowsOfSplits.length;
  const partials = new Float32Array(numRows * numSplits * (2 + hd));
  const want = new Float32Array(numRows * hd);
  rowsOfSplits.forEach(([, splits], r) => {
    splits.forEach((s, i) => {
      partials.set([s.m, s.l, ...s.acc], (r * numSplits + i) * (2 + hd));
    });
    const live = splits.filter((s) => s.l > 0);
    if (!live.length) return;
    const M = Math.max(...live.map((s) => s.m));
    const l = live.reduce((a, s) => a + s.l * Math.exp(s.m - M), 0);
    for (let d = 0; d < hd; d++) want[r * hd + d] = live.reduce((a, s) => a + s.acc[d] * Math.exp(s.m - M), 0) / l;
  });
  const out = gpu.createBuffer('out', numRows * hd * 4);
  const arena = new UniformArena(gpu);
  const pipe = gpu.pipeline('sparse_decode_reduce', {}, { WG: 64 }, REDUCE);
  const u = arena.params(REDUCE, {
    count: numRows * hd,
    headDim: hd,
    numSplits,
    nHeads: 1,
    qRowHeads: 1,
    qHeadOffset: 0,
    splitsWord: 0, // unused without SPLITS_ARG: numSplits is the count
  });
  gpu.run((pass) => gpu.dispatch(pass, pipe, [f32Buffer(gpu, partials), out, u], 1), arena);
  const got = await gpu.readF32(out, numRows * hd);
  assertNoGpuErrors(gpu);
  rowsOfSplits.forEach(([what], r) => {
    assertClose(
      got.subarray(r * hd, (r + 1) * hd),
      want.subarray(r * hd, (r + 1) * hd),
      { atol: 1e-6, rtol: 1e-5 },
      what,
    );
  });
  arena.destroy();
});
