/**
 * The prefill half of `sift bench attention` (bench/attention.ts): one layer's prefill attention over a prompt in
 * 512-token chunks through the tiled kernel (dense, dense with one query row per invocation, block-sparse, Lambda)
 * and the streaming heads (sink + local over their ring) through the tiled kernel; plus the chunk sampling
 * helpers the prefill suites share.
 */
import { SiftError } from '../config/errors.js';
import { HeadMode, PrefillAttention, type PrefillPlan } from '../model/attention/prefill.js';
import { blockDigestBytes } from '../shaders/block_digest.js';
import {
  type BlockHierarchy,
  DEFAULT_BLOCK_HIERARCHY,
  FLAT_BLOCKS,
  type HeadModeValue,
  planPrefillBlocks,
  selectionBytes,
  selectionReads,
} from '../shaders/block_select.js';
import { type Gpu, UniformArena } from '../shaders/runtime.js';
import { f32ToF16 } from '../util/dtype.js';
import { Rng } from '../util/rng.js';
import type { AttentionBenchOptions, AttentionShape } from './attention.js';
import { type Stat, stat } from './stats.js';

export interface PrefillRow {
  shape: string;
  context: number;
  chunk: number;
  chunks: number;
  timedChunks: number[];
  interpolated: boolean;
  topBlocks: number;
  keptShare: number;
  ms: {
    dense: Stat;
    denseOneRow: Stat;
    blockSparse: Stat;
    lambda: Stat;
    streaming: Stat;
  };
  /** The kernel layout of the dense / block-sparse / Lambda / streaming columns, and of denseOneRow. */
  layouts: { main: string; oneRow: string };
  denseGflops: number;
  /**
   * dense / block-sparse, dense / Lambda, and dense with one query row per invocation / dense (the register block;
   * 1 on GPUs, whose layout is the same for both).
   */
  speedup: { blockSparse: number; lambda: number; block: number };
  /** Bytes one layer's block selection reads for the first and the last chunk (digests + pooled queries). */
  selectionBytes: { firstChunk: number; lastChunk: number };
  /** Bytes of block digests a chunk writes (its own key blocks), the same for every chunk. */
  digestBytesPerChunk: number;
}

/**
 * Block selection's bytes per chunk at a fixed budget (the server's: --prefill-top-blocks 16), flat and
 * hierarchical, for the first and the last 512-token chunk of a prompt: exact counts from the chunk's plan
 * (`selectionBytes`), no GPU run. `coarse` = the last chunk's coarse digests, the part that grows with the prompt.
 */
export interface SelectionBytesRow {
  shape: string;
  context: number;
  topBlocks: number;
  hierarchy: BlockHierarchy;
  flat: { firstChunk: number; lastChunk: number };
  hierarchical: { firstChunk: number; lastChunk: number; coarseLast: number };
}

export function selectionBytesRows(
  shape: AttentionShape,
  contexts: readonly number[],
  topBlocks = 16,
  chunk = 512,
  hierarchy: BlockHierarchy = DEFAULT_BLOCK_HIERARCHY,
): SelectionBytesRow[] {
  const { numHeads, numKvHeads, headDim } = shape;
  return contexts.map((ctx) => {
    const planOf = (start: number) => {
      const n = Math.min(chunk, ctx - start);
      return planPrefillBlocks(
        new Uint32Array(n),
        Uint32Array.from({ length: n }, (_, i) => start + i),
      );
    };
    const first = planOf(0);
    const last = planOf(Math.floor((ctx - 1) / chunk) * chunk);
    const bytes = (plan: typeof first, h: BlockHierarchy) =>
      selectionBytes(plan, numHeads, numKvHeads, headDim, topBlocks, 0, h);
    let coarseLast = 0;
    for (let i = 0; i < last.numQBlocks; i++) {
      const r = selectionReads(Math.floor(last.qBlocks[i * 4 + 2] / 64), topBlocks, 0, hierarchy);
      coarseLast += r.coarse * numKvHeads * headDim * 4;
    }
    return {
      shape: shape.name,
      context: ctx,
      topBlocks,
      hierarchy,
      flat: { firstChunk: bytes(first, FLAT_BLOCKS), lastChunk: bytes(last, FLAT_BLOCKS) },
      hierarchical: { firstChunk: bytes(first, hierarchy), lastChunk: bytes(last, hierarchy), coarseLast },
    };
  });
}

/** Fills a buffer of `words` u32 (packed f16 pairs, ~N(0, 1)) by uploading one random block repeatedly. */
export function randomCache(gpu: Gpu, label: string, words: number, seed: number): GPUBuffer {
  const rng = new Rng(seed);
  const halves = new Uint16Array(4096).map(() => f32ToF16(rng.normal()));
  const blockWords = Math.min(words, 1 << 20);
  const block = new Uint32Array(blockWords);
  let s = seed >>> 0;
  for (let i = 0; i < blockWords; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    block[i] = (halves[s >>> 20] | (halves[(s >>> 8) & 4095] << 16)) >>> 0;
  }
  const buf = gpu.createBuffer(label, words * 4);
  for (let off = 0; off < words; off += blockWords) {
    const n = Math.min(blockWords, words - off);
    gpu.write(buf, n === blockWords ? block : block.subarray(0, n), off * 4);
  }
  return buf;
}

/** topBlocks keeping about `share` of the causal (query block, key block) pairs of an L-token prompt. */
export function topBlocksFor(L: number, share: number, bs = 64): { top: number; kept: number } {
  const nb = Math.ceil(L / bs);
  const total = (nb * (nb + 1)) / 2;
  let best = { top: 0, kept: 0, err: Number.POSITIVE_INFINITY };
  for (let k = 0; k <= nb; k++) {
    let kept = 0;
    for (let b = 0; b < nb; b++) kept += Math.min(b + 1, k + 2);
    const err = Math.abs(kept / total - share);
    if (err < best.err) best = { top: k, kept: kept / total, err };
  }
  return { top: best.top, kept: best.kept };
}

/** Chunk indices to time: all, or `k` evenly spread (first and last included). */
export function sampleChunks(n: number, k: number): number[] {
  if (k <= 0 || k >= n) return Array.from({ length: n }, (_, i) => i);
  if (k === 1) return [n - 1];
  return [...new Set(Array.from({ length: k }, (_, i) => Math.round((i * (n - 1)) / (k - 1))))];
}

/** Sum over chunks 0..n-1 of per-chunk values known at `at` (sorted), linear in between, flat outside. */
export function interpolatedSum(n: number, at: number[], values: number[]): number {
  let sum = 0;
  for (let c = 0; c < n; c++) {
    const j = at.indexOf(c);
    if (j >= 0) {
      sum += values[j];
      continue;
    }
    let hi = at.findIndex((x) => x > c);
    if (hi < 0) sum += values[values.length - 1];
    else if (hi === 0) sum += values[0];
    else {
      const lo = hi - 1;
      const f = (c - at[lo]) / (at[hi] - at[lo]);
      sum += values[lo] * (1 - f) + values[hi] * f;
      hi = 0;
    }
  }
  return sum;
}

export async function benchPrefill(
  gpu: Gpu,
  shape: AttentionShape,
  ctx: number,
  o: AttentionBenchOptions,
): Promise<PrefillRow> {
  const { numHeads, numKvHeads, headDim } = shape;
  const ps = o.pageSize ?? 64;
  const CHUNK = o.chunk ?? 512;
  const BS = 64;
  const pages = Math.ceil(ctx / ps);
  const words = (pages * ps * numKvHeads * headDim) / 2;
  o.onProgress?.(`attention ${shape.name} prefill @${ctx}: uploading random K/V`);
  const kCache = randomCache(gpu, 'bench.pk', words, 31);
  const vCache = randomCache(gpu, 'bench.pv', words, 37);
  const blockTable = gpu.upload(
    'bench.pbt',
    Uint32Array.from({ length: pages }, (_, i) => i),
  );
  const rng = new Rng(9);
  const q = gpu.upload('bench.pq', rng.normalArray(CHUNK * numHeads * headDim));
  const out = gpu.createBuffer('bench.pout', CHUNK * numHeads * headDim * 4);
  const { top, kept } = topBlocksFor(ctx, 1 / 8, BS);
  const nChunks = Math.ceil(ctx / CHUNK);
  const chosen = sampleChunks(nChunks, o.prefillSample);
  const arena = new UniformArena(gpu);
  type Name = 'dense' | 'denseOneRow' | 'blockSparse' | 'lambda' | 'streaming';
  const totals: Record<Name, number[]> = {
    dense: [],
    denseOneRow: [],
    blockSparse: [],
    lambda: [],
    streaming: [],
  };
  // every column in the layout long prompts run (the register block on CPU adapters), and dense also in the
  // one-row-per-invocation layout short steps run
  const cfg = { topBlocks: top, blockSize: BS, sink: 128, local: 256 };
  const prefill = new PrefillAttention(gpu, { ...cfg, kernel: { rowsPerThread: 4 } });
  const oneRow = new PrefillAttention(gpu, { ...cfg, kernel: { rowsPerThread: 1 } });
  const group = numHeads / numKvHeads;
  const digests = gpu.createBuffer('bench.digests', blockDigestBytes(pages, ps, BS, numKvHeads, headDim));
  const shapeArgs = { numHeads, numKvHeads, headDim, pageSize: ps, maxPagesPerSeq: pages };
  const chunkOf = (c: number) => {
    const start = c * CHUNK;
    const n = Math.min(CHUNK, ctx - start);
    const positions = Uint32Array.from({ length: n }, (_, i) => start + i);
    return { start, n, positions, plan: prefill.plan(new Uint32Array(n), positions, group) };
  };
  const selection = { firstChunk: 0, lastChunk: 0 };
  for (const [key, c] of [
    ['firstChunk', 0],
    ['lastChunk', nChunks - 1],
  ] as const) {
    selection[key] = selectionBytes(chunkOf(c).plan.blocks, numHeads, numKvHeads, headDim, top, 0, prefill.hierarchy);
  }
  const digestBytesPerChunk = (CHUNK / BS) * numKvHeads * headDim * 4;
  try {
    // the digests of every block of the context, as earlier chunks would have left them (untimed)
    const all = prefill.digestEntries([{ row: 0, start: 0, end: ctx }]);
    const allBuf = gpu.upload('bench.allEntries', all);
    gpu.run((pass) => {
      prefill.encodeDigests(pass, arena, {
        kCache,
        blockTable,
        entries: allBuf,
        digests,
        numEntries: all.length / 3,
        ...shapeArgs,
      });
    }, arena);
    allBuf.destroy();
    for (const [name, mode, pa] of [
      ['dense', HeadMode.dense, prefill],
      ['denseOneRow', HeadMode.dense, oneRow],
      ['blockSparse', HeadMode.sparse, prefill],
      ['lambda', HeadMode.lambda, prefill],
    ] as const) {
      const runChunk = async (c: number): Promise<number> => {
        const { start, n, plan } = chunkOf(c);
        const entries = prefill.digestEntries([{ row: 0, start, end: start + n }]);
        const bufs = {
          qBlocks: gpu.upload('qb', plan.blocks.qBlocks),
          tiles: gpu.upload('tiles', plan.tiles.tiles),
          blockList: gpu.createBuffer('bl', prefill.blockListBytes(plan, numKvHeads)),
          entries: gpu.upload('entries', entries),
        };
        await gpu.sync();
        arena.reset();
        const t0 = performance.now();
        gpu.run((pass) => {
          if (mode === HeadMode.sparse) {
            prefill.encodeDigests(pass, arena, {
              kCache,
              blockTable,
              entries: bufs.entries,
              digests,
              numEntries: entries.length / 3,
              ...shapeArgs,
            });
          }
          pa.encodeLayer(pass, arena, {
            q,
            kCache,
            vCache,
            blockTable,
            qBlocks: bufs.qBlocks,
            tiles: bufs.tiles,
            digests,
            blockList: bufs.blockList,
            out,
            plan,
            scale: 1 / Math.sqrt(headDim),
            ...shapeArgs,
            headModes: Array<HeadModeValue>(numKvHeads).fill(mode),
          });
        }, arena);
        await gpu.sync();
        const ms = performance.now() - t0;
        for (const b of Object.values(bufs)) b.destroy();
        return ms;
      };
      o.onProgress?.(`attention ${shape.name} prefill @${ctx}: ${name} warm-up`);
      await runChunk(0);
      for (let r = 0; r < o.repeat; r++) {
        const per: number[] = [];
        for (const c of chosen) {
          o.onProgress?.(
            `attention ${shape.name} prefill @${ctx}: ${name} repeat ${r + 1}/${o.repeat} chunk ${c + 1}/${nChunks}`,
          );
          per.push(await runChunk(c));
        }
        totals[name].push(interpolatedSum(nChunks, chosen, per));
      }
    }
    await benchStreaming(gpu, shape, o, { prefill, q, out, chunkOf, chosen, nChunks, arena, totals });
    const errs = gpu.takeErrors();
    if (errs.length) throw new SiftError('INTERNAL', `WebGPU errors during the benchmark: ${errs.join('; ')}`);
  } finally {
    arena.destroy();
    prefill.destroy();
    oneRow.destroy();
    for (const b of [kCache, vCache, blockTable, q, out, digests]) b.destroy();
  }
  const ms = {
    dense: stat(totals.dense),
    denseOneRow: stat(totals.denseOneRow),
    blockSparse: stat(totals.blockSparse),
    lambda: stat(totals.lambda),
    streaming: stat(totals.streaming),
  };
  const flops = 4 * numHeads * headDim * ((ctx * (ctx + 1)) / 2);
  return {
    shape: shape.name,
    context: ctx,
    chunk: CHUNK,
    chunks: nChunks,
    timedChunks: chosen,
    interpolated: chosen.length < nChunks,
    topBlocks: top,
    keptShare: kept,
    ms,
    denseGflops: flops / (ms.dense.median * 1e6),
    speedup: {
      blockSparse: ms.dense.median / ms.blockSparse.median,
      lambda: ms.dense.median / ms.lambda.median,
      block: ms.denseOneRow.median / ms.dense.median,
    },
    layouts: { main: layoutName(prefill.attention, 4), oneRow: layoutName(oneRow.attention, 1) },
    selectionBytes: selection,
    digestBytesPerChunk,
  };
}
/** The layout a prefill attention kernel runs (for the table): 'workgroup', or 'lanes' with its rows per thread. */
function layoutName(k: PrefillAttention['attention'], rows: number): string {
  return k.variant === 'lanes' ? `lanes, ${rows} row${rows > 1 ? 's' : ''}/invocation` : k.variant;
}

/**
 * Streaming heads of a prefill chunk (every KV head streaming): sink 128 + local 256 over a streaming pool of
 * sinkPages + ringPages pages (random f16, as earlier chunks would have left them) and the chunk's fresh f32 k/v
 * rows, through the tiled kernel (PrefillAttention.encodeStreaming); the per-(token, head) kernel it replaced for
 * prefill is compared in bench/results/PREFILL.md.
 */
async function benchStreaming(
  gpu: Gpu,
  shape: AttentionShape,
  o: AttentionBenchOptions,
  x: {
    prefill: PrefillAttention;
    q: GPUBuffer;
    out: GPUBuffer;
    chunkOf: (c: number) => { start: number; n: number; positions: Uint32Array; plan: PrefillPlan };
    chosen: number[];
    nChunks: number;
    arena: UniformArena;
    totals: Record<'streaming', number[]>;
  },
): Promise<void> {
  const { numHeads, numKvHeads, headDim } = shape;
  const ps = o.pageSize ?? 64;
  const CHUNK = o.chunk ?? 512;
  const sink = 128;
  const local = 256;
  const sinkPages = Math.ceil(sink / ps);
  const ringPages = Math.ceil(local / ps) + 1;
  const pages = sinkPages + ringPages;
  const words = (pages * ps * numKvHeads * headDim) / 2;
  const rng = new Rng(13);
  const bufs = {
    sk: randomCache(gpu, 'bench.sk', words, 41),
    sv: randomCache(gpu, 'bench.sv', words, 43),
    table: gpu.upload(
      'bench.st',
      Uint32Array.from({ length: pages }, (_, i) => i),
    ),
    kFresh: gpu.upload('bench.kf', rng.normalArray(CHUNK * numKvHeads * headDim)),
    vFresh: gpu.upload('bench.vf', rng.normalArray(CHUNK * numKvHeads * headDim)),
  };
  const scale = 1 / Math.sqrt(headDim);
  const fresh = { kFresh: bufs.kFresh, vFresh: bufs.vFresh, sinkPages, ringPages };
  const runChunk = async (c: number): Promise<number> => {
    const { plan } = x.chunkOf(c);
    const tiles = gpu.upload('tiles', plan.tiles.tiles);
    await gpu.sync();
    x.arena.reset();
    const t0 = performance.now();
    gpu.run((pass) => {
      x.prefill.encodeStreaming(pass, x.arena, {
        q: x.q,
        kCache: bufs.sk,
        vCache: bufs.sv,
        streamTable: bufs.table,
        tiles,
        out: x.out,
        plan,
        numHeads,
        numKvHeads,
        qHeadOffset: 0,
        qRowHeads: numHeads,
        headDim,
        pageSize: ps,
        scale,
        sinkTokens: sink,
        localTokens: local,
        fresh,
      });
    }, x.arena);
    await gpu.sync();
    const ms = performance.now() - t0;
    tiles.destroy();
    return ms;
  };
  try {
    o.onProgress?.(`attention ${shape.name} prefill: streaming heads warm-up`);
    await runChunk(0);
    for (let r = 0; r < o.repeat; r++) {
      const per: number[] = [];
      for (const c of x.chosen) {
        o.onProgress?.(
          `attention ${shape.name} prefill: streaming heads repeat ${r + 1}/${o.repeat} chunk ${c + 1}/${x.nChunks}`,
        );
        per.push(await runChunk(c));
      }
      x.totals.streaming.push(interpolatedSum(x.nChunks, x.chosen, per));
    }
  } finally {
    for (const b of Object.values(bufs)) b.destroy();
  }
}
