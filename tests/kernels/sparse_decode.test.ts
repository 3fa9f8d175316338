/**
 * Top-k decode attention against references: both variants (shaders/sparse_decode.wgsl, shaders/sparse_decode_lanes.wgsl,
 * sharing sparse_decode_common.wgsl) and the split reduction (shaders/sparse_decode_reduce.wgsl) run on every case.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AttentionKernel } from '../../shaders/attention.js';
import { digestBytes } from '../../shaders/page_digest.js';
import { SelectionSchedule } from '../../shaders/page_select.js';
import { UniformArena } from '../../shaders/runtime.js';
import {
  partialsBytes,
  SparseDecodeAttention,
  SparseDecodeKernel,
  type SparseDecodeRow,
  type SparseDecodeVariant,
} from '../../shaders/sparse_decode.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { makeSeqCache, poisonPage, uploadCache } from '../helpers/sparse-cache.js';
import { attentionRef } from '../reference/attention.js';
import { allDigestsRef, digestWordsRef } from '../reference/page_digest.js';
import { sparseDecodeRef } from '../reference/sparse_decode.js';

// f32 dot products (head dim <= 128) and an f32 online softmax over up to a few thousand keys of f16 values,
// against f64 on the same f16 values: the output is a convex combination of N(0, 1) values, errors are absolute,
// ~1e-7 typically. The same bound holds between the sparse kernel and the dense kernel.
const TOL = { atol: 2e-5, rtol: 1e-4 };
const VARIANTS: SparseDecodeVariant[] = ['lanes', 'workgroup'];

test('SelectionSchedule reselects after every prefill and then exactly every R decode steps', () => {
  const s = new SelectionSchedule<string>(4);
  const steps = Array.from({ length: 10 }, () => s.step('a'));
  assert.deepEqual(
    steps.map((x, i) => (x ? i : -1)).filter((i) => i >= 0),
    [0, 4, 8],
  );
  s.step('a'); // step 10 reuses
  s.onPrefill('a'); // a prefill chunk: the next decode step reselects, then every 4 again
  assert.deepEqual(
    Array.from({ length: 6 }, () => s.step('a')),
    [true, false, false, false, true, false],
  );
  // Sequences are independent; a forgotten one starts over; R = 1 reselects every step.
  assert.equal(s.step('b'), true);
  assert.equal(s.step('b'), false);
  s.forget('b');
  assert.equal(s.step('b'), true);
  const every = new SelectionSchedule(1);
  assert.deepEqual([every.step(1), every.step(1), every.step(1)], [true, true, true]);
  assert.deepEqual(s.stats(), { reselects: 7, reuses: 13 });
  assert.throws(() => new SelectionSchedule(0), /interval/);
});

interface DenseCase {
  seed: number;
  group: number;
  pageSize: number;
  headDim: number;
}

/** Budget >= context: SparseDecodeAttention (selection keeps every page) equals dense attention. */
async function denseCase(c: DenseCase): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(c.seed);
  const { pageSize, headDim, group } = c;
  const numKvHeads = group === 8 ? 1 : rng.int(1, 2);
  const numHeads = numKvHeads * group;
  const lens = [rng.int(1, 3 * pageSize), rng.int(200, 500), 4 * pageSize, pageSize + 1, 1, rng.int(600, 900)];
  const cache = makeSeqCache(rng, lens, { numKvHeads, headDim, pageSize });
  const { kCache, vCache } = uploadCache(gpu, cache);
  const blockTable = u32Buffer(gpu, cache.blockTable);
  const digests = u32Buffer(
    gpu,
    digestWordsRef(
      allDigestsRef(
        cache.k,
        { pageSize, logicalPageSize: 16, numKvHeads, headDim },
        cache.numPages,
        cache.blockTable,
        cache.maxPagesPerSeq,
        lens,
      ),
      headDim,
    ),
  );
  // Decode rows in another order than the block table rows.
  const order = [4, 1, 5, 0, 3, 2];
  const rows: SparseDecodeRow[] = order.map((s, i) => ({
    seqId: `s${s}`,
    blockRow: s,
    position: lens[s] - 1,
    slot: (i * 5) % 7,
    tokenBudget: i % 2 ? Number.POSITIVE_INFINITY : lens[s] + rng.int(0, 100),
  }));
  const numRows = rows.length;
  const q = rng.normalArray(numRows * numHeads * headDim);
  const qBuf = f32Buffer(gpu, q);
  const scale = 1 / Math.sqrt(headDim);
  const arena = new UniformArena(gpu);
  const outs: GPUBuffer[] = [];
  const sparse = VARIANTS.map(
    (variant) =>
      new SparseDecodeAttention(gpu, {
        numHeads,
        numKvHeads,
        headDim,
        pageSize,
        maxPagesPerSeq: cache.maxPagesPerSeq,
        maxRows: 8,
        numSlots: 7,
        variant,
        splitTokens: variant === 'lanes' ? 256 : 64,
      }),
  );
  const tokenSeq = u32Buffer(
    gpu,
    Uint32Array.from(rows, (r) => r.blockRow),
  );
  const positions = u32Buffer(
    gpu,
    Uint32Array.from(rows, (r) => r.position),
  );
  for (const s of sparse) s.prepareStep(rows);
  gpu.run((pass) => {
    for (const s of sparse) {
      const out = gpu.createBuffer('out', numRows * numHeads * headDim * 4);
      outs.push(out);
      s.encodeLayer(pass, arena, {
        q: qBuf,
        kCache,
        vCache,
        blockTable,
        digests,
        selection: s.createLayerSelection(),
        out,
        scale,
      });
    }
    const out = gpu.createBuffer('dense-out', numRows * numHeads * headDim * 4);
    outs.push(out);
    new AttentionKernel(gpu).encode(pass, arena, {
      q: qBuf,
      kCache,
      vCache,
      blockTable,
      tokenSeq,
      positions,
      out,
      T: numRows,
      numHeads,
      numKvHeads,
      headDim,
      pageSize,
      maxPagesPerSeq: cache.maxPagesPerSeq,
      scale,
    });
  }, arena);
  const want = attentionRef({
    q,
    kCache: new Uint16Array(cache.kWords.buffer),
    vCache: new Uint16Array(cache.vWords.buffer),
    blockTable: cache.blockTable,
    tokenSeq: Uint32Array.from(rows, (r) => r.blockRow),
    positions: Uint32Array.from(rows, (r) => r.position),
    numHeads,
    scale,
    T: numRows,
    numKvHeads,
    headDim,
    pageSize,
    maxPagesPerSeq: cache.maxPagesPerSeq,
  });
  const dense = await gpu.readF32(outs[VARIANTS.length], want.length);
  const what = `seed=${c.seed} heads=${numHeads}/${numKvHeads} hd=${headDim} page=${pageSize} lens=${lens}`;
  assertClose(dense, want, TOL, `dense kernel vs reference ${what}`);
  for (let i = 0; i < VARIANTS.length; i++) {
    const got = await gpu.readF32(outs[i], want.length);
    assertClose(got, want, TOL, `sparse ${VARIANTS[i]} (budget >= context) vs dense reference ${what}`);
    assertClose(got, dense, TOL, `sparse ${VARIANTS[i]} (budget >= context) vs dense kernel ${what}`);
  }
  assertNoGpuErrors(gpu);
  for (const s of sparse) s.destroy();
  arena.destroy();
}

test('budget >= context: sparse decode equals dense (reference and dense kernel), GQA 1/4/8 x page 16/32/64, both variants', async () => {
  let seed = 1;
  for (const group of [1, 4, 8]) {
    for (const pageSize of [16, 32, 64]) {
      await denseCase({ seed, group, pageSize, headDim: [64, 48, 128][seed % 3] });
      seed++;
    }
  }
});

/**
 * Given page lists (some without the newest page, as a reused selection), unselected pages and unused slots full
 * of NaN: the kernel equals the reference over exactly the listed pages plus the newest page.
 */
async function listCase(
  seed: number,
  group: number,
  pageSize: number,
  headDim: number,
  splitTokens: number,
  range?: { qHeadOffset: number; qRowHeads: number },
): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(seed);
  const numKvHeads = rng.int(1, 2);
  const numHeads = numKvHeads * group;
  const lens = [
    rng.int(1, 40) * pageSize + rng.int(1, pageSize - 1),
    rng.int(2, 30) * pageSize,
    rng.int(1, pageSize),
    rng.int(500, 2000),
  ];
  const cache = makeSeqCache(rng, lens, { numKvHeads, headDim, pageSize });
  const numRows = lens.length;
  const maxSelected = 24;
  const numSlots = numRows;
  const lists: number[][] = []; // (row, kvh) -> page columns stored in the selection
  const selected = new Uint32Array(numSlots * numKvHeads * maxSelected).fill(0xffffffff);
  const counts = new Uint32Array(numSlots * numKvHeads);
  const keep = lens.map(() => new Set<number>());
  for (let r = 0; r < numRows; r++) {
    const P = Math.ceil(lens[r] / pageSize);
    for (let h = 0; h < numKvHeads; h++) {
      const pick = Array.from({ length: P }, (_, i) => i).filter(() => rng.next() < 0.4);
      if (rng.next() < 0.5 && !pick.includes(P - 1)) pick.push(P - 1); // else: a reused list without the newest page
      const list = pick.slice(0, maxSelected).sort((a, b) => a - b);
      if (!list.length && P > 1) list.push(0);
      lists.push(list);
      selected.set(list, (r * numKvHeads + h) * maxSelected);
      counts[r * numKvHeads + h] = list.length;
      for (const i of list) keep[r].add(i);
      keep[r].add(P - 1);
    }
  }
  // Pages no head of the row attends to hold NaN: reading any of them would show.
  for (let r = 0; r < numRows; r++) {
    const P = Math.ceil(lens[r] / pageSize);
    for (let i = 0; i < P; i++) if (!keep[r].has(i)) poisonPage(cache, cache.blockTable[r * cache.maxPagesPerSeq + i]);
  }
  const rows = lens.map((len, r) => ({ blockRow: r, position: len - 1 }));
  const rowWords = new Uint32Array(numRows * 4);
  rows.forEach((r, i) => {
    rowWords.set([r.blockRow, r.position, i, 0], 4 * i);
  });
  const q = rng.normalArray(numRows * numHeads * headDim);
  const scale = rng.next() < 0.5 ? 1 / Math.sqrt(headDim) : 0.3;
  const want = sparseDecodeRef(
    q,
    cache.k,
    cache.v,
    cache.blockTable,
    rows,
    (r, kvh) => {
      const l = lists[r * numKvHeads + kvh];
      const newest = Math.floor(rows[r].position / pageSize);
      return l.includes(newest) ? l : [...l, newest];
    },
    { numHeads, numKvHeads, headDim, pageSize, maxPagesPerSeq: cache.maxPagesPerSeq },
    scale,
  );
  const { kCache, vCache } = uploadCache(gpu, cache);
  const arena = new UniformArena(gpu);
  // With a head range q / out rows hold rowHeads heads: q's other heads are NaN, out's other heads a sentinel.
  const off = range?.qHeadOffset ?? 0;
  const rowHeads = range?.qRowHeads ?? numHeads;
  const widen = (x: Float32Array, fill: number) => {
    const w = new Float32Array(numRows * rowHeads * headDim).fill(fill);
    for (let r = 0; r < numRows; r++) {
      w.set(x.subarray(r * numHeads * headDim, (r + 1) * numHeads * headDim), (r * rowHeads + off) * headDim);
    }
    return w;
  };
  const OUT_SENTINEL = 12345.5;
  const qWide = widen(q, Number.NaN);
  const wantWide = widen(want, OUT_SENTINEL);
  for (const variant of VARIANTS) {
    const kernel = new SparseDecodeKernel(gpu, { variant, splitTokens });
    const { numSplits, pagesPerSplit } = kernel.splitPlan(maxSelected + 1, pageSize);
    const out = f32Buffer(gpu, new Float32Array(numRows * rowHeads * headDim).fill(OUT_SENTINEL));
    arena.reset();
    gpu.run((pass) => {
      kernel.encode(pass, arena, {
        q: f32Buffer(gpu, qWide),
        qHeadOffset: range?.qHeadOffset,
        qRowHeads: range?.qRowHeads,
        kCache,
        vCache,
        blockTable: u32Buffer(gpu, cache.blockTable),
        rows: u32Buffer(gpu, rowWords),
        selected: u32Buffer(gpu, selected),
        counts: u32Buffer(gpu, counts),
        partials: gpu.createBuffer('partials', partialsBytes(numRows, numHeads, numSplits, headDim)),
        out,
        numRows,
        numHeads,
        numKvHeads,
        headDim,
        pageSize,
        maxPagesPerSeq: cache.maxPagesPerSeq,
        maxSelected,
        numSplits,
        pagesPerSplit,
        scale,
      });
    }, arena);
    const got = await gpu.readF32(out, wantWide.length);
    assertNoGpuErrors(gpu);
    assertClose(
      got,
      wantWide,
      TOL,
      `sparse ${variant} seed=${seed} heads=${numHeads}/${numKvHeads} range=${off}+${numHeads}/${rowHeads} hd=${headDim} page=${pageSize} splits=${numSplits}x${pagesPerSplit}`,
    );
  }
  arena.destroy();
}

test('sparse decode over given page lists equals the reference over only those pages; NaN pages never leak', async () => {
  let seed = 100;
  for (const [group, pageSize, headDim, splitTokens] of [
    [1, 16, 64, 16],
    [4, 32, 48, 64],
    [8, 64, 128, 512],
    [2, 64, 36, 64],
    [4, 16, 80, 1000],
  ]) {
    await listCase(seed++, group, pageSize, headDim, splitTokens);
  }
});

test('sparse decode on a head range of wider q/out rows: the range equals the reference, other heads untouched', async () => {
  await listCase(200, 4, 32, 48, 64, { qHeadOffset: 0, qRowHeads: 16 });
  await listCase(201, 1, 16, 64, 32, { qHeadOffset: 3, qRowHeads: 6 });
  await listCase(202, 2, 64, 36, 512, { qHeadOffset: 2, qRowHeads: 9 });
});

/**
 * A model of 4 KV heads (GQA 2: 8 query heads) whose layer keeps r_l = 2 retrieval heads (main pool of 2 heads,
 * digests and selections in the 2-head layout inside buffers sized for 4): encodeLayer({ numKvHeads: 2 }) on q /
 * out rows of 8 heads equals a 4-query-head / 2-KV-head SparseDecodeAttention on the first 4 heads alone (same
 * selection, same output bits) and leaves out heads 4..7 untouched; r_l = 0 encodes nothing.
 */
test('SparseDecodeAttention.encodeLayer with r_l < nKv retrieval heads equals the full computation on heads [0, r_l * group)', async () => {
  const gpu = await testGpu();
  const rng = new Rng(4242);
  const nKv = 4;
  const group = 2;
  const rl = 2;
  const headDim = 64;
  const pageSize = 16;
  const logicalPageSize = 16;
  const lens = [900, 350, 40];
  const cache = makeSeqCache(rng, lens, { numKvHeads: rl, headDim, pageSize });
  const digestWords = digestWordsRef(
    allDigestsRef(
      cache.k,
      { pageSize, logicalPageSize, numKvHeads: rl, headDim },
      cache.numPages,
      cache.blockTable,
      cache.maxPagesPerSeq,
      lens,
    ),
    headDim,
  );
  const { kCache, vCache } = uploadCache(gpu, cache);
  const blockTable = u32Buffer(gpu, cache.blockTable);
  const fullDigests = gpu.createBuffer(
    'digests-full',
    digestBytes(cache.numPages, pageSize, logicalPageSize, nKv, headDim),
  );
  gpu.write(fullDigests, digestWords);
  const smallDigests = u32Buffer(gpu, digestWords);
  const numRows = lens.length;
  const rows: SparseDecodeRow[] = lens.map((len, s) => ({
    seqId: s,
    blockRow: s,
    position: len - 1,
    slot: (s + 1) % numRows,
    tokenBudget: [6 * pageSize, 4 * pageSize, Number.POSITIVE_INFINITY][s],
  }));
  const qFull = rng.normalArray(numRows * nKv * group * headDim);
  const qSmall = new Float32Array(numRows * rl * group * headDim);
  for (let r = 0; r < numRows; r++) {
    qSmall.set(
      qFull.subarray(r * nKv * group * headDim, (r * nKv * group + rl * group) * headDim),
      r * rl * group * headDim,
    );
  }
  const SENT = -777.25;
  const common = { headDim, pageSize, logicalPageSize, maxPagesPerSeq: cache.maxPagesPerSeq, maxRows: 4, numSlots: 4 };
  const model = new SparseDecodeAttention(gpu, { ...common, numHeads: nKv * group, numKvHeads: nKv });
  const layer = new SparseDecodeAttention(gpu, { ...common, numHeads: rl * group, numKvHeads: rl });
  const selModel = model.createLayerSelection();
  const selLayer = layer.createLayerSelection();
  const outModel = f32Buffer(gpu, new Float32Array(qFull.length).fill(SENT));
  const outEmpty = f32Buffer(gpu, new Float32Array(qFull.length).fill(SENT));
  const outLayer = gpu.createBuffer('out-layer', qSmall.length * 4);
  model.prepareStep(rows);
  layer.prepareStep(rows);
  const arena = new UniformArena(gpu);
  gpu.run((pass) => {
    const qb = f32Buffer(gpu, qFull);
    const args = { q: qb, kCache, vCache, blockTable, digests: fullDigests, scale: 0.125 };
    model.encodeLayer(pass, arena, { ...args, selection: selModel, out: outModel, numKvHeads: rl });
    model.encodeLayer(pass, arena, { ...args, selection: selModel, out: outEmpty, numKvHeads: 0 });
    layer.encodeLayer(pass, arena, {
      ...args,
      q: f32Buffer(gpu, qSmall),
      digests: smallDigests,
      selection: selLayer,
      out: outLayer,
    });
  }, arena);
  const gotModel = await gpu.readF32(outModel, qFull.length);
  const gotEmpty = await gpu.readF32(outEmpty, qFull.length);
  const gotLayer = await gpu.readF32(outLayer, qSmall.length);
  const selA = await gpu.readU32(selModel.selected);
  const selB = await gpu.readU32(selLayer.selected);
  const cntA = await gpu.readU32(selModel.counts);
  const cntB = await gpu.readU32(selLayer.counts);
  assertNoGpuErrors(gpu);
  const ms = model.maxSelected;
  assert.equal(ms, layer.maxSelected);
  // Selections: the layer's r_l-head layout is a prefix of the model-sized buffers.
  assert.deepEqual(Array.from(cntA.subarray(0, 4 * rl)), Array.from(cntB.subarray(0, 4 * rl)));
  for (let sb = 0; sb < 4 * rl; sb++) {
    assert.deepEqual(
      Array.from(selA.subarray(sb * ms, sb * ms + cntA[sb])),
      Array.from(selB.subarray(sb * ms, sb * ms + cntB[sb])),
      `selection ${sb}`,
    );
  }
  const hd = headDim;
  for (let r = 0; r < numRows; r++) {
    for (let h = 0; h < nKv * group; h++) {
      const o = (r * nKv * group + h) * hd;
      const row = Array.from(gotModel.subarray(o, o + hd));
      if (h < rl * group) {
        const w = (r * rl * group + h) * hd;
        assert.deepEqual(row, Array.from(gotLayer.subarray(w, w + hd)), `row ${r} head ${h}`);
      } else {
        assert.ok(
          row.every((x) => x === SENT),
          `row ${r} head ${h} outside the range was written`,
        );
      }
    }
  }
  assert.ok(
    gotEmpty.every((x) => x === SENT),
    'r_l = 0 wrote out',
  );
  model.destroy();
  layer.destroy();
  arena.destroy();
});

test('SparseDecodeAttention over decode steps: reselects every 4 steps and after prefill, output equals the reference over its selection', async () => {
  const gpu = await testGpu();
  const rng = new Rng(777);
  const numHeads = 4;
  const numKvHeads = 2;
  const headDim = 64;
  const pageSize = 16;
  const logicalPageSize = 16;
  const steps = 6;
  const lens0 = [700, 300];
  const cache = makeSeqCache(
    rng,
    lens0.map((l) => l + steps),
    { numKvHeads, headDim, pageSize },
  );
  const digests = allDigestsRef(
    cache.k,
    { pageSize, logicalPageSize, numKvHeads, headDim },
    cache.numPages,
    cache.blockTable,
    cache.maxPagesPerSeq,
    cache.lens,
  );
  const { kCache, vCache } = uploadCache(gpu, cache);
  const blockTable = u32Buffer(gpu, cache.blockTable);
  const digestBuf = gpu.createBuffer(
    'digests',
    digestBytes(cache.numPages, pageSize, logicalPageSize, numKvHeads, headDim),
  );
  gpu.write(digestBuf, digestWordsRef(digests, headDim));
  const sd = new SparseDecodeAttention(gpu, {
    numHeads,
    numKvHeads,
    headDim,
    pageSize,
    maxPagesPerSeq: cache.maxPagesPerSeq,
    maxRows: 2,
    numSlots: 2,
    maxSelected: 16,
  });
  const selection = sd.createLayerSelection();
  const arena = new UniformArena(gpu);
  const budgets = [8 * pageSize, 5 * pageSize];
  const pattern: boolean[][] = [];
  for (let step = 0; step < steps; step++) {
    if (step === 5) sd.schedule.onPrefill('b'); // a prefill chunk of b before step 5
    const rows = lens0.map((l, s) => ({
      seqId: s ? 'b' : 'a',
      blockRow: s,
      position: l + step - 1,
      slot: 1 - s,
      tokenBudget: budgets[s],
    }));
    pattern.push(sd.prepareStep(rows));
    const q = rng.normalArray(2 * numHeads * headDim);
    const out = gpu.createBuffer('out', q.length * 4);
    arena.reset();
    gpu.run((pass) => {
      sd.encodeLayer(pass, arena, {
        q: f32Buffer(gpu, q),
        kCache,
        vCache,
        blockTable,
        digests: digestBuf,
        selection,
        out,
        scale: 0.125,
      });
    }, arena);
    const sel = await gpu.readU32(selection.selected);
    const cnt = await gpu.readU32(selection.counts);
    const got = await gpu.readF32(out, q.length);
    assertNoGpuErrors(gpu);
    const want = sparseDecodeRef(
      q,
      cache.k,
      cache.v,
      cache.blockTable,
      rows,
      (r, kvh) => {
        const sb = rows[r].slot * numKvHeads + kvh;
        const l = Array.from(sel.subarray(sb * 16, sb * 16 + cnt[sb]));
        assert.equal(l.length, Math.floor(budgets[r] / pageSize));
        const newest = Math.floor(rows[r].position / pageSize);
        return l.includes(newest) ? l : [...l, newest];
      },
      { numHeads, numKvHeads, headDim, pageSize, maxPagesPerSeq: cache.maxPagesPerSeq },
      0.125,
    );
    assertClose(got, want, TOL, `step ${step}`);
  }
  assert.deepEqual(pattern, [
    [true, true],
    [false, false],
    [false, false],
    [false, false],
    [true, true],
    [false, true],
  ]);
  sd.destroy();
  arena.destroy();
});
