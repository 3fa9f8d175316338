/**
 * KV pools that span several slabs (shaders/lib/slabs.ts, model/kv-storage.ts) end to end: a model whose main K/V
 * pools, streaming rings, page digests and digest hierarchy are all forced into slabs of a few pages / slots (a tiny
 * binding limit) serves exactly as the same model with one buffer per pool: the same logits bit for bit on every
 * step of a workload with streaming heads, chunked block-sparse prefill (block digests in slabs too), sparse decode
 * with page selection (budget below the context) and dense decode; and its greedy tokens with a dense budget equal the masked reference forward pass.
 * Also: KvStorage's split and its refusal past the slabs a kernel can bind, pagesFor's cap, and page copies (K, V
 * and digests across slab boundaries: how `sift bench decode --fill-copy` fills a long context).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { decodeBatch, prefillSeq, pseudoTokens } from '../../bench/model-steps.js';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { attentionConfig } from '../../config/attention.js';
import { engineConfig } from '../../config/engine.js';
import { isSiftError } from '../../config/errors.js';
import { EngineCore } from '../../engine/core.js';
import { argmax } from '../../engine/sampler.js';
import type { ExecuteInput, ExecuteOutput } from '../../model/executor.js';
import { loadHeadPlan } from '../../model/head-plan.js';
import { KvStorage } from '../../model/kv-storage.js';
import { ModelRunner } from '../../model/runner.js';
import { cachePageBytes } from '../../shaders/kv_write.js';
import { collect, greedy } from '../engine/core-helpers.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { readPool } from '../helpers/slabs.js';
import { referenceForward } from '../reference/forward.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'sift-kv-slabs-'));
after(() => rmSync(root, { recursive: true, force: true }));

const PAGE = 16;
const SINK = 16;
const LOCAL = 32;
/** Binding limit forced on every pool: 4 pages of one head's K (16 x 8 dims x f16), 3 digest-hierarchy slots. */
const SLAB_BYTES = 1024;

const variant = SYNTHETIC_VARIANTS.find((v) => v.kvHeads < v.heads)!; // GQA 4: 8 heads, 2 KV heads, head dim 8

async function load(
  dir: string,
  pattern: string,
  budget: string,
  slabBytes?: number,
  prefillMode: 'dense' | 'block-sparse' = 'dense',
): Promise<ModelRunner> {
  const gpu = await testGpu();
  const attention = attentionConfig(
    {
      flags: {
        headPattern: pattern,
        streamingFraction: '0.5',
        sink: String(SINK),
        local: String(LOCAL),
        tokenBudget: budget,
        prefillMode,
        prefillTopBlocks: '1',
      },
    },
    PAGE,
  );
  const cfg = engineConfig({
    flags: { pageSize: PAGE, kvCacheMib: 1, maxBatchTokens: 40, maxSeqs: 4, maxContext: 256 },
  });
  return ModelRunner.load(dir, cfg, { gpu, attention, kvSlabBytes: slabBytes });
}

/** Every sampling entry also returns its logits row; the rows of steps that sample are recorded in step order. */
function recordLogits(engine: ModelRunner): Float32Array[] {
  const rows: Float32Array[] = [];
  const execute = engine.execute.bind(engine);
  engine.execute = async (input: ExecuteInput): Promise<ExecuteOutput> => {
    const entries = input.entries.map((e) =>
      e.sampling ? { ...e, sampling: { ...e.sampling, returnLogits: true } } : e,
    );
    const out = await execute({ entries });
    if (out.logits.length > 0) rows.push(out.logits.slice());
    return out;
  };
  return rows;
}

function writePattern(dir: string): string {
  const rng = new Rng(variant.seed + 5);
  const scores = Array.from({ length: variant.layers }, () =>
    Array.from({ length: variant.kvHeads }, () => rng.next().toFixed(3)),
  );
  const pattern = path.join(dir, 'heads.tsv');
  writeFileSync(pattern, `# test pattern\n${scores.map((r) => r.join('\t')).join('\n')}\n`);
  return pattern;
}

test('pools in slabs of a few pages serve bit for bit as one buffer each: streaming rings, block-sparse prefill, sparse and dense decode', async () => {
  const dir = path.join(root, 'same');
  writeSyntheticCheckpoint(dir, variant);
  const pattern = writePattern(dir);
  const one = await load(dir, pattern, '64', undefined, 'block-sparse');
  const split = await load(dir, pattern, '64', SLAB_BYTES, 'block-sparse');
  // every pool of `split` spans several slabs; `one` has one buffer each
  const fa = split.forwardPass.attention;
  for (const [li, l] of split.kv.layers.entries()) {
    const what = `layer ${li}`;
    if (l.numRetrievalHeads > 0) assert.ok(l.k.numSlabs > 1 && l.v.numSlabs > 1, `${what}: K/V in slabs`);
    if (l.numStreamingHeads > 0) assert.ok(l.sk.numSlabs > 1 && l.sv.numSlabs > 1, `${what}: rings in slabs`);
    assert.ok(fa.digests(li)!.numSlabs > 1, `${what}: digests in slabs`);
    assert.ok(fa.blockDigestsOf(li)!.numSlabs > 1, `${what}: block digests in slabs`);
    assert.equal(one.kv.layers[li].k.numSlabs, 1);
  }
  assert.ok(
    split.kv.layers.some((l) => l.numStreamingHeads > 0) && split.kv.layers.some((l) => l.numRetrievalHeads > 0),
  );
  assert.ok(fa.sparse!.levelsPlan().numSlabs > 1, 'digest hierarchy in slabs');
  const logits = [one, split].map(recordLogits);
  const loops = [one, split].map((e) => EngineCore.create(e));
  try {
    const rng = new Rng(9);
    // prompts past sink + local and one prefill chunk (40): chunked prefill, recycling rings; 12 decode steps each
    // at contexts past the budget (64): page selection and reuse; one request dense
    const prompts = [90, 61, 75].map((n) => Array.from({ length: n }, () => rng.int(3, variant.vocab - 1)));
    const run = (loop: EngineCore) =>
      Promise.all(
        prompts.map((p, i) =>
          collect(loop.submit(greedy(`s${i}`, p, 12, i === 2 ? { attention: { mode: 'dense' } } : {}))),
        ),
      );
    const [a, b] = [await run(loops[0]), await run(loops[1])];
    for (const i of prompts.keys()) assert.deepEqual(b[i].tokens, a[i].tokens, `prompt ${i}: tokens`);
    assert.equal(logits[1].length, logits[0].length, 'steps');
    assert.ok(logits[0].length >= 12);
    logits[0].forEach((row, s) => {
      assert.deepEqual(logits[1][s], row, `sampling step ${s}: logits bit for bit`);
    });
    assert.ok(loops[1].stats().attendedShare < 1, 'sparse decode read less than the context');
  } finally {
    for (const l of loops) await l.shutdown(1000);
  }
});

test('pools in slabs: greedy tokens with a dense budget equal the masked reference forward pass', async () => {
  const dir = path.join(root, 'ref');
  writeSyntheticCheckpoint(dir, variant);
  const pattern = writePattern(dir);
  const engine = await load(dir, pattern, '100000', SLAB_BYTES);
  const loop = EngineCore.create(engine);
  const ckpt = openCheckpoint(dir);
  try {
    const plan = loadHeadPlan(pattern, ckpt.config, { streamingFraction: 0.5 });
    const streaming = { heads: plan.streaming, sink: SINK, local: LOCAL };
    const rng = new Rng(4);
    const prompt = Array.from({ length: 83 }, () => rng.int(3, variant.vocab - 1));
    const got = await collect(loop.submit(greedy('r', prompt, 6)));
    const ids = [...prompt];
    for (let i = 0; i < 6; i++) {
      const l = referenceForward(ckpt, ids, { kvF16: true, streaming });
      ids.push(argmax(l.subarray((ids.length - 1) * variant.vocab, ids.length * variant.vocab)));
    }
    assert.deepEqual(got.tokens, ids.slice(prompt.length));
  } finally {
    ckpt.close();
    await loop.shutdown(1000);
  }
});

test('KvStorage splits a layer pool into slabs of whole pages and refuses more slabs than a kernel binds', async () => {
  const gpu = await testGpu();
  const c = openCheckpoint(path.join(root, 'same')).config;
  const pageBytes = cachePageBytes(PAGE, c.numKvHeads, c.headDim);
  const maxSlabs = KvStorage.maxSlabsPerPool(gpu);
  assert.equal(maxSlabs, Math.floor((gpu.caps.maxStorageBuffersPerShaderStage - 6) / 2));
  const kv = new KvStorage(gpu, c, 11, PAGE, { maxSlabBytes: 3 * pageBytes });
  try {
    assert.equal(kv.layers[0].k.numSlabs, 4, '11 pages in slabs of 3');
    assert.equal(kv.layers[0].k.slabBytes, 3 * pageBytes);
    assert.equal(kv.layers[0].k.bytes, 11 * pageBytes);
    assert.deepEqual(kv.mainPlan, {
      unitBytes: pageBytes,
      units: 11,
      unitsPerSlab: 3,
      numSlabs: 4,
      slabBytes: 3 * pageBytes,
    });
  } finally {
    kv.destroy();
  }
  // pagesFor: memory first, then at most maxSlabs slabs of whole pages (no longer one binding)
  const opts = { maxSlabBytes: 3 * pageBytes };
  assert.equal(KvStorage.pagesFor(gpu, c, PAGE, 1024, opts), 3 * maxSlabs);
  const fit = Math.floor(gpu.caps.maxStorageBufferBindingSize / pageBytes);
  assert.equal(KvStorage.pagesFor(gpu, c, PAGE, 1e9), maxSlabs * fit, 'the cap is maxSlabs bindings, not one');
  assert.throws(
    () => new KvStorage(gpu, c, 3 * maxSlabs + 1, PAGE, opts),
    (e: unknown) =>
      isSiftError(e) &&
      e.code === 'GPU_LIMIT' &&
      e.message.includes(`at most ${3 * maxSlabs} pages`) &&
      e.message.includes('maxStorageBuffersPerShaderStage'),
  );
});

test('page copies across slabs (K, V, digests): decoding over copied pages equals decoding over the repeated pages', async () => {
  const gpu = await testGpu();
  const dir = path.join(root, 'copy');
  writeSyntheticCheckpoint(dir, variant);
  const cfg = engineConfig({
    flags: { pageSize: PAGE, kvCacheMib: 1, maxBatchTokens: 40, maxSeqs: 2, maxContext: 256 },
  });
  // logical pages of 4 tokens: the page digests (4 x 2 heads x (min, max) x 8 dims f16 = 256 bytes a page) span 3
  // slabs of 6 pages; the key-block digests (64 bytes a page) fit one, so their copies go through the scratch buffer
  const attention = attentionConfig(
    { flags: { tokenBudget: '64', prefillMode: 'block-sparse', logicalPageSize: '4' } },
    PAGE,
  );
  // 3 pages per slab of the 2-head K/V pools (512 bytes a page), 5 slabs: 15 pages
  const engine = await ModelRunner.load(dir, cfg, { gpu, attention, kvSlabBytes: 1536 });
  try {
    assert.equal(engine.kv.layers[0].k.numSlabs, 5);
    const M = engine.forwardPass.maxPagesPerSeq;
    const real = 4;
    await prefillSeq(
      engine,
      'fill',
      pseudoTokens(real * PAGE, variant.vocab, 1),
      Uint32Array.from({ length: M }, (_, j) => j % real),
    );
    engine.release('fill');
    const decode = async (id: string, table: Uint32Array, budget: number) => {
      const out: Float32Array[] = [];
      for (let s = 0; s < 3; s++) out.push(await decodeBatch(engine, [id], [5 + s], [150 + s], table, budget));
      engine.release(id);
      return out;
    };
    // Copied layout: pages 4..10 copied from pages d % 4 (across slabs 1..3), the table the identity.
    // Repeated layout: the table repeats pages 0..3, except column 9 (where positions 150..152 are decoded), which
    // points at its own copy of page 1 (page 14), so the decode writes alias no other column in either layout.
    const dst = Array.from({ length: 11 - real }, (_, i) => real + i);
    await engine.copyPages([...dst.map((d) => d % real), 1], [...dst, 14]);
    // the page digests (across slabs) and key-block digests (within one) of every copied page equal its source's
    for (let li = 0; li < variant.layers; li++) {
      const fa = engine.forwardPass.attention;
      assert.ok(fa.digests(li)!.numSlabs > 1, `layer ${li}: page digests in slabs`);
      for (const pool of [fa.digests(li)!, fa.blockDigestsOf(li)!]) {
        const words = new Uint32Array((await readPool(gpu, pool)).buffer);
        const per = words.length / engine.kv.numPages;
        for (const [i, d] of [...dst, 14].entries()) {
          const s = i < dst.length ? d % real : 1;
          const what = `layer ${li} page ${d}`;
          assert.deepEqual(words.subarray(d * per, (d + 1) * per), words.subarray(s * per, (s + 1) * per), what);
        }
      }
    }
    const identity = Uint32Array.from({ length: M }, (_, j) => (j < 11 ? j : 13));
    const repeated = Uint32Array.from({ length: M }, (_, j) => (j === 9 ? 14 : j % real));
    const got: Float32Array[][] = [];
    const want: Float32Array[][] = [];
    for (const budget of [Number.POSITIVE_INFINITY, 64]) {
      got.push(await decode(`c${budget}`, identity, budget));
      want.push(await decode(`r${budget}`, repeated, budget));
    }
    for (const [b, steps] of got.entries()) {
      for (const [s, l] of steps.entries())
        assert.deepEqual(l, want[b][s], `budget ${b ? 64 : 'dense'} step ${s}: logits`);
    }
  } finally {
    engine.destroy();
  }
});
