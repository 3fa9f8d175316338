/**
 * Streaming-head attention (shaders/streaming_attention.wgsl, and the tiled prefill attention's Lambda heads over the
 * streaming pool, shaders/prefill_attention.wgsl with `stream`) and the streaming-pool KV write
 * (shaders/kv_write_streaming.wgsl), driven step by step through
 * KvCacheManager's streaming pool like the engine will: each step reserves the sequences' new tokens, runs streaming
 * attention (fresh keys from the activations, older keys from the ring), then writes the resident tokens' K/V at
 * StreamingPool.slotFor slots. Every step is checked against the table-walking reference and (with f16-exact
 * activations) against a dense attention over each sequence's full history with the sink + local mask; the caches
 * start as NaN, so any read of a slot never written shows up. Heads run as a range of wider q/k/v rows (the
 * streaming heads after the head permutation) and the other heads of `out` must stay untouched. One case keeps the
 * streaming pool in slabs of whole pages (shaders/lib/slabs.ts).
 */
// run-tests: timeout 1800
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KvCacheManager } from '../../kvcache/manager.js';
import { planPrefillBlocks } from '../../shaders/block_select.js';
import { KvWriteStreamingKernel, SKIP_SLOT } from '../../shaders/kv_write_streaming.js';
import {
  PrefillAttentionKernel,
  type PrefillAttentionOptions,
  planQueryTiles,
} from '../../shaders/prefill_attention.js';
import { UniformArena } from '../../shaders/runtime.js';
import {
  freshStartRows,
  StreamingAttentionKernel,
  type StreamingAttentionVariant,
  streamingKeysRead,
} from '../../shaders/streaming_attention.js';
import { f16ToF32, f32ToF16 } from '../../util/dtype.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, f32Buffer, testGpu, u32Buffer } from '../helpers/gpu.js';
import { F16_NAN } from '../helpers/paged.js';
import { Rng } from '../helpers/rng.js';
import { poolOf, readPool } from '../helpers/slabs.js';
import {
  denseMaskedRef,
  kvWriteStreamingRef,
  streamingAttentionRef,
  streamingKeys,
} from '../reference/streaming_attention.js';

const TOL = { atol: 2e-5, rtol: 1e-4 };
const VARIANTS: StreamingAttentionVariant[] = ['lanes', 'workgroup'];
const SENTINEL = 12345;

interface Case {
  seed: number;
  group: number; // query heads per KV head
  kvRowHeads: number; // KV heads per k/v row (the model's)
  streamingHeads: number; // the last `streamingHeads` of them stream
  headDim: number;
  pageSize: number;
  sink: number;
  local: number;
  /** Per sequence, the chunk sizes of successive steps (1 = a decode step). */
  chunks: number[][];
  /** Round activations to f16 so the dense full-precision reference applies too. */
  exactF16: boolean;
  /** The layer's sliding window and logit soft-cap. */
  window?: number;
  softcap?: number;
  /** Tiled kernel: a smaller key tile (crosses more tile edges). */
  maxKeyTile?: number;
  /** Tiled kernel: also the register block of 'lanes' (4 rows per invocation, vec4 loops; large steps take it). */
  block?: boolean;
  /** Tiled kernel: also the register block split over 8 subgroup lanes per row (large head dims take it). */
  split?: boolean;
  /** The streaming pool's K and V each in this many slabs of whole pages (default one buffer). */
  slabs?: number;
}

function roundF16(xs: Float32Array): Float32Array {
  for (let i = 0; i < xs.length; i++) xs[i] = f16ToF32(f32ToF16(xs[i]));
  return xs;
}

async function runCase(c: Case): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(c.seed);
  const { group, kvRowHeads, headDim, pageSize, sink, local } = c;
  const s = c.streamingHeads;
  const kvHeadOffset = kvRowHeads - s;
  const qRowHeads = kvRowHeads * group;
  const qHeadOffset = kvHeadOffset * group;
  const numHeads = s * group;
  const numSeqs = c.chunks.length;
  const scale = 1 / Math.sqrt(headDim);
  const mgr = new KvCacheManager({
    numPages: 512,
    pageSize,
    enablePrefixCache: false,
    streaming: { numPages: 64, sinkTokens: sink, localTokens: local },
  });
  const sp = mgr.streaming!;
  const numStreamingPages = sp.config.numPages;
  const tableWidth = sp.numSinkPages + sp.numRingPages;
  const cacheElems = numStreamingPages * pageSize * s * headDim;
  let kCacheHost: Uint16Array = new Uint16Array(cacheElems).fill(F16_NAN);
  let vCacheHost: Uint16Array = new Uint16Array(cacheElems).fill(F16_NAN);
  const pageBytes = pageSize * s * headDim * 2;
  const kCache = poolOf(gpu, 'sk', kCacheHost, pageBytes, c.slabs ?? 1);
  const vCache = poolOf(gpu, 'sv', vCacheHost, pageBytes, c.slabs ?? 1);
  const attn = VARIANTS.map((variant) => new StreamingAttentionKernel(gpu, { variant, maxWorkgroupsPerDim: 7 }));
  const tiledLayouts: PrefillAttentionOptions[] = [
    ...VARIANTS.map((variant) => ({ variant })),
    ...(c.block ? [{ variant: 'lanes' as const, rowsPerThread: 4 }] : []),
    ...(c.split ? [{ variant: 'lanes' as const, rowsPerThread: 4, split: 8 }] : []),
  ];
  const tiled = tiledLayouts.map(
    (l) => new PrefillAttentionKernel(gpu, { ...l, maxWorkgroupsPerDim: 5, maxKeyTile: c.maxKeyTile }),
  );
  const write = new KvWriteStreamingKernel(gpu);
  const arena = new UniformArena(gpu);
  const history = Array.from({ length: numSeqs }, () => ({ k: [] as Float32Array[], v: [] as Float32Array[] }));
  const len = new Array<number>(numSeqs).fill(0);
  const steps = Math.max(...c.chunks.map((x) => x.length));
  let pagesUsed = 0;
  for (let step = 0; step < steps; step++) {
    // this step's tokens: each active sequence's chunk, as contiguous rows with consecutive positions
    const tokenSeq: number[] = [];
    const positions: number[] = [];
    for (let q = 0; q < numSeqs; q++) {
      const n = c.chunks[q][step] ?? 0;
      if (n === 0) continue;
      if (len[q] === 0) assert.ok(mgr.allocate(`s${q}`, new Array(n).fill(0)), 'allocate');
      else assert.ok(mgr.appendSlots(`s${q}`, n), 'appendSlots');
      for (let i = 0; i < n; i++) {
        tokenSeq.push(q);
        positions.push(len[q] + i);
      }
    }
    const T = tokenSeq.length;
    const stats = mgr.stats().streaming!;
    pagesUsed = stats.pagesUsed;
    const live = len.filter((n, q) => n > 0 || (c.chunks[q][step] ?? 0) > 0).length;
    assert.equal(stats.pagesUsed, live * sp.pagesPerSequence, 'streaming pages are fixed per sequence');
    const streamTable = new Uint32Array(numSeqs * tableWidth);
    for (let q = 0; q < numSeqs; q++) {
      if (!mgr.has(`s${q}`)) continue; // rows of sequences not started yet stay 0 (never read)
      const tb = mgr.streamingTable(`s${q}`);
      streamTable.set([...tb.sinkPages, ...tb.ringPages], q * tableWidth);
    }
    const slots = Uint32Array.from(tokenSeq.map((q, t) => mgr.slotFor(`s${q}`, positions[t])?.slot ?? SKIP_SLOT));
    const freshStart = freshStartRows(tokenSeq, positions);
    const qAct = rng.normalArray(T * qRowHeads * headDim);
    const kAct = rng.normalArray(T * kvRowHeads * headDim);
    const vAct = rng.normalArray(T * kvRowHeads * headDim);
    if (c.exactF16) [qAct, kAct, vAct].forEach(roundF16);
    const outs = [...VARIANTS, ...tiledLayouts].map(() =>
      f32Buffer(gpu, new Float32Array(T * qRowHeads * headDim).fill(SENTINEL), 'out'),
    );
    // the tiled kernel's query tiles (every token of the step, decode steps as one-token tiles)
    const tilePlan = planQueryTiles(planPrefillBlocks(tokenSeq, positions), tiled[0].tileTokens(group));
    const tilesBuf = u32Buffer(gpu, tilePlan.tiles);
    const shape = {
      T,
      numHeads,
      numKvHeads: s,
      headDim,
      pageSize,
      sinkTokens: sink,
      localTokens: local,
      sinkPages: sp.numSinkPages,
      ringPages: sp.numRingPages,
      qHeadOffset,
      qRowHeads,
      kvHeadOffset,
      kvRowHeads,
      window: c.window,
      softcap: c.softcap,
    };
    const slotsBuf = u32Buffer(gpu, slots);
    const bufs = {
      q: f32Buffer(gpu, qAct),
      kFresh: f32Buffer(gpu, kAct),
      vFresh: f32Buffer(gpu, vAct),
      kCache,
      vCache,
      streamTable: u32Buffer(gpu, streamTable),
      tokenSeq: u32Buffer(gpu, tokenSeq),
      positions: u32Buffer(gpu, positions),
      freshStart: u32Buffer(gpu, freshStart),
    };
    arena.reset();
    gpu.run((pass) => {
      attn.forEach((kern, i) => {
        kern.encode(pass, arena, { ...bufs, ...shape, out: outs[i], scale });
      });
      tiled.forEach((kern, i) => {
        kern.encode(pass, arena, {
          q: bufs.q,
          kCache,
          vCache,
          blockTable: bufs.streamTable,
          tiles: tilesBuf,
          out: outs[VARIANTS.length + i],
          T,
          tilePlan,
          numHeads,
          numKvHeads: s,
          headDim,
          pageSize,
          maxPagesPerSeq: tableWidth,
          scale,
          headModes: new Array(s).fill(2),
          sink,
          local,
          qHeadOffset,
          qRowHeads,
          window: c.window,
          softcap: c.softcap,
          stream: {
            kFresh: bufs.kFresh,
            vFresh: bufs.vFresh,
            sinkPages: sp.numSinkPages,
            ringPages: sp.numRingPages,
            kvHeadOffset,
            kvRowHeads,
          },
        });
      });
      write.encode(pass, arena, { k: bufs.kFresh, v: bufs.vFresh, kCache, vCache, slots: slotsBuf, ...shape });
    }, arena);

    const want = streamingAttentionRef({
      ...shape,
      q: qAct,
      kFresh: kAct,
      vFresh: vAct,
      kCache: kCacheHost,
      vCache: vCacheHost,
      streamTable,
      tokenSeq: Uint32Array.from(tokenSeq),
      positions: Uint32Array.from(positions),
      freshStart,
      scale,
      out: new Float32Array(T * qRowHeads * headDim).fill(SENTINEL),
    });
    const written = kvWriteStreamingRef(kAct, vAct, kCacheHost, vCacheHost, slots, { ...shape, numKvHeads: s });
    kCacheHost = written.kCache;
    vCacheHost = written.vCache;
    // the full history, for the dense masked reference
    for (let t = 0; t < T; t++) {
      const o = (t * kvRowHeads + kvHeadOffset) * headDim;
      history[tokenSeq[t]].k.push(kAct.slice(o, o + s * headDim));
      history[tokenSeq[t]].v.push(vAct.slice(o, o + s * headDim));
    }
    const what = `streaming seed=${c.seed} window=${c.window ?? 0} softcap=${c.softcap ?? 0} step=${step} T=${T} group=${group} heads ${qHeadOffset}+${numHeads}/${qRowHeads}`;
    if (c.exactF16) {
      for (let t = 0; t < T; t++) {
        const o = (t * qRowHeads + qHeadOffset) * headDim;
        const dense = denseMaskedRef(qAct.subarray(o, o + numHeads * headDim), history[tokenSeq[t]], positions[t], {
          ...shape,
          numKvHeads: s,
          sinkTokens: sink,
          localTokens: local,
          scale,
        });
        assertClose(
          want.subarray(o, o + numHeads * headDim),
          dense,
          { atol: 1e-9, rtol: 1e-9 },
          `${what} ref vs dense`,
        );
      }
    }
    for (let i = 0; i < outs.length; i++) {
      const got = await gpu.readF32(outs[i], want.length);
      const name =
        i < VARIANTS.length
          ? VARIANTS[i]
          : `tiled prefill_attention ${JSON.stringify(tiledLayouts[i - VARIANTS.length])}`;
      assertClose(got, want, TOL, `${what} ${name}`);
    }
    for (let q = 0; q < numSeqs; q++) len[q] += c.chunks[q][step] ?? 0;
    for (const b of [
      ...outs,
      tilesBuf,
      slotsBuf,
      bufs.q,
      bufs.kFresh,
      bufs.vFresh,
      bufs.streamTable,
      bufs.tokenSeq,
      bufs.positions,
      bufs.freshStart,
    ]) {
      b.destroy();
    }
  }
  assert.equal(mgr.stats().streaming!.pagesUsed, pagesUsed, 'streaming pool page count constant over the run');
  // the ring holds exactly what the reference wrote (bit for bit), NaN elsewhere
  const gotK = new Uint16Array((await readPool(gpu, kCache)).buffer, 0, cacheElems);
  const gotV = new Uint16Array((await readPool(gpu, vCache)).buffer, 0, cacheElems);
  if (c.exactF16) {
    assert.deepEqual(gotK, kCacheHost, 'streaming K cache');
    assert.deepEqual(gotV, vCacheHost, 'streaming V cache');
  }
  assertNoGpuErrors(gpu);
  for (const t of tiled) t.destroy();
  arena.destroy();
  kCache.destroy();
  vCache.destroy();
}

/** Chunk schedule reaching `total` tokens: prefill chunks up to `maxChunk`, then decode steps. */
function schedule(rng: Rng, total: number, maxChunk: number, decodeSteps: number): number[] {
  const out: number[] = [];
  let n = 0;
  while (n < total - decodeSteps) {
    const c = Math.min(rng.int(1, maxChunk), total - decodeSteps - n);
    out.push(c);
    n += c;
  }
  for (let i = 0; i < decodeSteps; i++) out.push(1);
  return out;
}

test('streaming attention: a prefill chunk longer than the ring (local 32, page 16, chunk 100), then decode; GQA 4', async () => {
  await runCase({
    seed: 1,
    group: 4,
    kvRowHeads: 2,
    streamingHeads: 1,
    headDim: 32,
    pageSize: 16,
    sink: 4,
    local: 32,
    chunks: [
      [100, 1, 1, 1, 37, 1],
      [0, 3, 70, 1, 1, 1],
    ],
    exactF16: true,
    maxKeyTile: 8,
  });
});

test('streaming attention over a streaming pool split into 4 slabs of whole pages (rings across slabs); GQA 2', async () => {
  await runCase({
    seed: 5,
    group: 2,
    kvRowHeads: 3,
    streamingHeads: 2,
    headDim: 8,
    pageSize: 16,
    sink: 4,
    local: 32,
    chunks: [
      [40, 1, 1, 20, 1],
      [3, 90, 1, 1, 1],
    ],
    exactF16: true,
    slabs: 4,
  });
});

test('streaming attention over > 10x the window in many chunks: the ring recycles, pages stay constant; GQA 1', async () => {
  const rng = new Rng(2);
  await runCase({
    seed: 2,
    group: 1,
    kvRowHeads: 3,
    streamingHeads: 2,
    headDim: 48,
    pageSize: 16,
    sink: 4,
    local: 32,
    chunks: [schedule(rng, 400, 60, 3), schedule(rng, 390, 45, 4)],
    exactF16: true,
  });
});

test('streaming attention reads in-chunk keys at f32 and cached ones at f16, exactly as the reference', async () => {
  const rng = new Rng(3);
  await runCase({
    seed: 3,
    group: 2,
    kvRowHeads: 4,
    streamingHeads: 3,
    headDim: 64,
    pageSize: 8,
    sink: 10,
    local: 20,
    chunks: [schedule(rng, 120, 30, 2), [5, 1, 1, 1, 50]],
    exactF16: false,
  });
});

test('streaming attention without sink tokens (pure window) and with a window wider than the sequence', async () => {
  await runCase({
    seed: 4,
    group: 1,
    kvRowHeads: 1,
    streamingHeads: 1,
    headDim: 16,
    pageSize: 16,
    sink: 0,
    local: 20,
    chunks: [[30, 1, 25, 1]],
    exactF16: true,
    block: true,
  });
  await runCase({
    seed: 5,
    group: 2,
    kvRowHeads: 2,
    streamingHeads: 2,
    headDim: 16,
    pageSize: 16,
    sink: 8,
    local: 200,
    chunks: [[17, 1, 40]],
    exactF16: true,
    maxKeyTile: 4,
    block: true,
  });
});

test('streaming heads in a sliding-window layer: the sink + local mask cut to the window; soft-capped scores', async () => {
  // window between local and sink + local (cuts the sink away once the sequence passes it), inside local (the
  // window alone decides), and soft-capping on top
  const rng = new Rng(6);
  await runCase({
    seed: 6,
    group: 2,
    kvRowHeads: 2,
    streamingHeads: 1,
    headDim: 32,
    pageSize: 16,
    sink: 8,
    local: 24,
    window: 29,
    chunks: [schedule(rng, 90, 40, 3), [50, 1, 1]],
    exactF16: true,
  });
  await runCase({
    seed: 7,
    group: 1,
    kvRowHeads: 1,
    streamingHeads: 1,
    headDim: 16,
    pageSize: 16,
    sink: 4,
    local: 32,
    window: 13,
    softcap: 1.5,
    chunks: [[40, 1, 30, 1]],
    exactF16: true,
  });
});

test('freshStartRows: first row of each sequence; rejects non-contiguous rows', () => {
  assert.deepEqual([...freshStartRows([0, 0, 1, 2, 2, 2], [5, 6, 0, 9, 10, 11])], [0, 0, 2, 3, 3, 3]);
  assert.throws(() => freshStartRows([0, 1, 0], [0, 0, 1]), /contiguous/);
  assert.throws(() => freshStartRows([0, 0], [3, 5]), /contiguous/);
});

test('streamingKeysRead counts the keys of the kernel mask (the reference key list), for usage', () => {
  for (const [sink, local] of [
    [0, 1],
    [4, 32],
    [128, 256],
    [16, 5],
  ]) {
    for (const window of [0, 1, 20, 100, 1000]) {
      for (let pos = 0; pos < 600; pos += pos < 40 ? 1 : 37) {
        assert.equal(
          streamingKeysRead(pos, sink, local, window),
          streamingKeys(pos, sink, local, window).length,
          `${sink}+${local} window ${window} @${pos}`,
        );
      }
    }
  }
});

test('streaming heads at head dim 128, GQA 4, through the register block split over 8 subgroup lanes', async () => {
  const rng = new Rng(9);
  await runCase({
    seed: 9,
    group: 4,
    kvRowHeads: 2,
    streamingHeads: 1,
    headDim: 128,
    pageSize: 16,
    sink: 6,
    local: 37,
    chunks: [schedule(rng, 150, 50, 2), [70, 1, 1]],
    exactF16: true,
    split: true,
  });
});
