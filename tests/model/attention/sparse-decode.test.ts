/**
 * Sparse decode attention of a decode batch (model/attention/sparse-decode.ts): the selection schedule, selection
 * slots and the budget rule above the kernels, against references. With the budget covering the context it equals
 * dense attention (both kernel variants); on a layer with r_l < nKv retrieval heads it equals the computation on
 * those heads alone; over decode steps it reselects every 4 steps and after a prefill, and attends exactly to its
 * selection plus the newest page.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pagesKept } from '../../../model/attention/budget.js';
import { SelectionSchedule } from '../../../model/attention/selection-schedule.js';
import { SparseDecodeAttention, type SparseDecodeRow } from '../../../model/attention/sparse-decode.js';
import { AttentionKernel } from '../../../shaders/attention.js';
import { digestBytes } from '../../../shaders/page_digest.js';
import { UniformArena } from '../../../shaders/runtime.js';
import { partialsBytes, type SparseDecodeVariant } from '../../../shaders/sparse_decode.js';
import { assertClose } from '../../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../../helpers/gpu.js';
import { Rng } from '../../helpers/rng.js';
import { makeSeqCache, uploadCache } from '../../helpers/sparse-cache.js';
import { attentionRef } from '../../reference/attention.js';
import { allDigestsRef, digestWordsRef } from '../../reference/page_digest.js';
import { sparseDecodeRef } from '../../reference/sparse_decode.js';

// As in tests/kernels/sparse_decode.test.ts: f32 online softmax over f16 values against f64 on the same values.
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
  /**
   * Size the batch (maxRows) so that the partials scratch holds this many splits within the adapter's
   * maxStorageBufferBindingSize (about 2/3 of it per split for 1): lists longer than that many splits at the
   * configured pages per split take more pages per split, each row as its own list needs (in the kernel).
   */
  fillBinding?: number;
  /** Context lengths of the 6 sequences (default random, up to 900 tokens). */
  lens?: number[];
  /** Key slots per split of both variants (default 256 lanes, 64 workgroup). */
  splitTokens?: number;
}

/** Budget >= context: SparseDecodeAttention (selection keeps every page) equals dense attention. */
async function denseCase(c: DenseCase): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(c.seed);
  const { pageSize, headDim, group } = c;
  const numKvHeads = group === 8 ? 1 : rng.int(1, 2);
  const numHeads = numKvHeads * group;
  const lens = c.lens ?? [
    rng.int(1, 3 * pageSize),
    rng.int(200, 500),
    4 * pageSize,
    pageSize + 1,
    1,
    rng.int(600, 900),
  ];
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
    tokenBudget: i % 2 ? Number.POSITIVE_INFINITY : lens[s] + rng.int(0, 100),
  }));
  const numRows = rows.length;
  const q = rng.normalArray(numRows * numHeads * headDim);
  const qBuf = f32Buffer(gpu, q);
  const scale = 1 / Math.sqrt(headDim);
  const arena = new UniformArena(gpu);
  const outs: GPUBuffer[] = [];
  const perRowSplit = partialsBytes(1, numHeads, 1, headDim);
  const fill = c.fillBinding;
  const maxRows = fill ? Math.floor(gpu.caps.maxStorageBufferBindingSize / (fill + 0.5) / perRowSplit) : 8;
  const sparse = VARIANTS.map(
    (variant) =>
      new SparseDecodeAttention(gpu, {
        numHeads,
        numKvHeads,
        headDim,
        pageSize,
        maxPagesPerSeq: cache.maxPagesPerSeq,
        maxRows,
        numSlots: 7,
        variant,
        splitTokens: c.splitTokens ?? (variant === 'lanes' ? 256 : 64),
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
  if (fill) {
    for (const s of sparse) {
      const uncapped = s.attention.splitPlan(s.maxSelected + 1, pageSize).numSplits;
      assert.equal(s.maxSplits, Math.min(fill, uncapped), `the scratch holds ${fill} splits`);
    }
    assert.ok(
      sparse.some((s) => s.attention.splitPlan(cache.maxPagesPerSeq, pageSize).numSplits > fill),
      `uncapped, the longest list would take more than ${fill} splits`,
    );
  }
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

test('the partials scratch never outgrows maxStorageBufferBindingSize: fewer, longer splits, same result', async () => {
  await denseCase({ seed: 40, group: 8, pageSize: 16, headDim: 128, fillBinding: 1 });
  await denseCase({ seed: 41, group: 4, pageSize: 32, headDim: 48, fillBinding: 1 });
  // capped at a few splits: a step's grid may then hold fewer than the scratch (e.g. 4 pages at 2 a split: 2 of 3),
  // and each row works out its own pages per split from that grid
  await denseCase({ seed: 42, group: 4, pageSize: 16, headDim: 64, fillBinding: 5 });
  await denseCase({ seed: 43, group: 2, pageSize: 16, headDim: 32, fillBinding: 3 });
  // a page a split, 3 splits held: the longest list (4 pages) takes 2 pages a split, so the step's grid has 2 splits,
  // and the 3-page row must take 2 pages a split too (at 1 it would need a third split the grid does not have)
  await denseCase({
    seed: 44,
    group: 4,
    pageSize: 16,
    headDim: 64,
    fillBinding: 3,
    lens: [64, 48, 40, 17, 1, 33],
    splitTokens: 16,
  });
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
    if (step === 5) sd.onPrefill('b'); // a prefill chunk of b before step 5
    const rows = lens0.map((l, s) => ({
      seqId: s ? 'b' : 'a',
      blockRow: s,
      position: l + step - 1,
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
    const pageList = (r: number, kvh: number) => {
      const sb = sd.slotOf(rows[r].seqId) * numKvHeads + kvh;
      const l = Array.from(sel.subarray(sb * 16, sb * 16 + cnt[sb]));
      assert.equal(l.length, pagesKept(rows[r].position + 1, budgets[r], pageSize));
      const newest = Math.floor(rows[r].position / pageSize);
      return l.includes(newest) ? l : [...l, newest];
    };
    // usage counts what the kernel read: the tokens (up to the query) of the pages on its list, every KV head alike
    rows.forEach((row, r) => {
      for (let kvh = 0; kvh < numKvHeads; kvh++) {
        const read = pageList(r, kvh).reduce((n, p) => n + Math.min(pageSize, row.position + 1 - p * pageSize), 0);
        assert.equal(sd.lastTokensRead[r], read, `step ${step} row ${r} head ${kvh}: tokens read`);
      }
    });
    const want = sparseDecodeRef(
      q,
      cache.k,
      cache.v,
      cache.blockTable,
      rows,
      pageList,
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
