/**
 * `sift bench attention`: kernel-level attention time for ONE layer, on random f16 K/V caches uploaded once.
 *
 * Decode (one query token at the end of a context of `ctx` tokens), per shape and context:
 *   dense          the dense paged kernel (AttentionKernel, one workgroup per (token, head)), as a baseline;
 *   dense-sparse   SparseDecodeAttention with an infinite budget (every page through the top-k kernel);
 *   sparse-every   page selection (Quest digests scores + top-k) + top-k attention within `budget`, every step;
 *   sparse-amort   the same with the selection amortized over the reuse interval (attention + selection / reuse).
 * Achieved bandwidth = bytes of K/V (and digests for a selection) the step must read / time, vs --peak-gbps.
 *
 * Prefill (chunks of 512 query tokens over a context of L tokens, summed over the chunks), through the tiled prefill
 * attention (model/attention/prefill.ts): dense causal vs block-sparse (block digests of the chunk + selection
 * keeping about 1/8 of the causal key blocks + attention) vs Lambda (sink 128 + local 256) over the main pool; and
 * the streaming heads' Lambda over their own pool (sink pages + ring, the chunk's keys from fresh f32 rows) through
 * the tiled kernel. The dense and block-sparse columns run the kernel's register block on CPU adapters (the layout
 * long prompts take), and dense also one query row per invocation (short steps' layout). With `prefillSample` K
 * only K chunks at evenly spread offsets are timed and the rest interpolated (said in the output). The per-(token,
 * head) kernel this replaced is compared in bench/results/PREFILL.md.
 */
import { SiftError } from '../config/errors.js';
import { tokensAttended } from '../model/attention/budget.js';
import { SparseDecodeAttention } from '../model/attention/sparse-decode.js';
import { AttentionKernel } from '../shaders/attention.js';
import { digestBytes, digestEntries, PageDigestKernel } from '../shaders/page_digest.js';
import { type Gpu, UniformArena } from '../shaders/runtime.js';
import { Rng } from '../util/rng.js';
import {
  benchPrefill,
  type PrefillRow,
  randomCache,
  type SelectionBytesRow,
  selectionBytesRows,
} from './attention-prefill.js';
import { mapStat, mdTable, type Stat, stat } from './stats.js';

export { interpolatedSum, type PrefillRow, sampleChunks, topBlocksFor } from './attention-prefill.js';

export interface AttentionShape {
  name: string;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

export const ATTENTION_SHAPES: Readonly<Record<string, AttentionShape>> = Object.freeze({
  stories15M: { name: 'stories15M', numHeads: 6, numKvHeads: 6, headDim: 48 },
  'llama3-8b': { name: 'llama3-8b', numHeads: 32, numKvHeads: 8, headDim: 128 },
});

/** A preset name or QxKVxD (e.g. 4x2x32). */
export function parseShape(s: string): AttentionShape {
  const p = ATTENTION_SHAPES[s];
  if (p) return p;
  const m = /^(\d+)x(\d+)x(\d+)$/.exec(s);
  if (!m) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `unknown --shape "${s}" (presets: ${Object.keys(ATTENTION_SHAPES).join(', ')}, or QxKVxD)`,
    );
  }
  return { name: s, numHeads: Number(m[1]), numKvHeads: Number(m[2]), headDim: Number(m[3]) };
}

export interface AttentionBenchOptions {
  shapes: AttentionShape[];
  contexts: number[];
  prefillContexts: number[];
  budget: number;
  reuse: number;
  /** Timed repeats after a warm-up. */
  repeat: number;
  /** Chunks timed per prefill context (0 = all). */
  prefillSample: number;
  /** Peak memory bandwidth for the "share of peak" column; null = none. */
  peakGbps: number | null;
  pageSize?: number;
  chunk?: number;
  /** Target wall ms per timed repeat of a decode kernel (sets steps per repeat; default 40). */
  targetMs?: number;
  onProgress?: (msg: string) => void;
}

export interface DecodeRow {
  shape: string;
  context: number;
  budget: number;
  tokensAttended: number;
  stepsPerRepeat: Record<string, number>;
  ms: { dense: Stat; denseSparse: Stat; sparseEvery: Stat; sparseAttn: Stat; sparseAmortized: Stat };
  bytes: { dense: number; sparseEvery: number; sparseAmortized: number; digests: number };
  gbps: { dense: number; denseSparse: number; sparseEvery: number; sparseAmortized: number };
  speedup: { every: number; amortized: number };
}

export interface AttentionBenchResult {
  suite: 'attention';
  budget: number;
  reuse: number;
  repeat: number;
  pageSize: number;
  peakGbps: number | null;
  decode: DecodeRow[];
  prefill: PrefillRow[];
  /** Block selection's bytes per chunk at the server's budget, flat vs hierarchical (with any prefill context). */
  selectionBytes: SelectionBytesRow[];
  notes: string[];
}

async function timeRepeats(
  gpu: Gpu,
  repeat: number,
  targetMs: number,
  stepMultiple: number,
  encode: (pass: GPUComputePassEncoder, arena: UniformArena) => void,
  before?: () => void,
): Promise<{ ms: Stat; steps: number }> {
  const arena = new UniformArena(gpu);
  const runSteps = async (steps: number): Promise<number> => {
    arena.reset();
    before?.();
    await gpu.sync();
    const t0 = performance.now();
    gpu.run((pass) => {
      for (let i = 0; i < steps; i++) encode(pass, arena);
    }, arena);
    await gpu.sync();
    return performance.now() - t0;
  };
  try {
    await runSteps(1); // pipelines, first-touch
    const one = await runSteps(1);
    let steps = Math.max(1, Math.min(256, Math.ceil(targetMs / Math.max(one, 1e-3))));
    steps = Math.ceil(steps / stepMultiple) * stepMultiple;
    const times: number[] = [];
    for (let r = 0; r < repeat; r++) times.push((await runSteps(steps)) / steps);
    const errs = gpu.takeErrors();
    if (errs.length) throw new SiftError('INTERNAL', `WebGPU errors during the benchmark: ${errs.join('; ')}`);
    return { ms: stat(times), steps };
  } finally {
    arena.destroy();
  }
}

async function benchDecode(gpu: Gpu, shape: AttentionShape, o: AttentionBenchOptions): Promise<DecodeRow[]> {
  const { numHeads, numKvHeads, headDim } = shape;
  const ps = o.pageSize ?? 64;
  const L = 16;
  const contexts = [...o.contexts].sort((a, b) => a - b);
  const maxCtx = contexts[contexts.length - 1];
  const P = Math.ceil(maxCtx / ps);
  const words = (P * ps * numKvHeads * headDim) / 2;
  const bytesPerToken = numKvHeads * headDim * 2;
  o.onProgress?.(`attention ${shape.name}: uploading random K/V for ${maxCtx} tokens`);
  const kCache = randomCache(gpu, 'bench.k', words, 11);
  const vCache = randomCache(gpu, 'bench.v', words, 23);
  const bt = Uint32Array.from({ length: P }, (_, i) => i);
  const blockTable = gpu.upload('bench.bt', bt);
  const digests = gpu.createBuffer('bench.digests', digestBytes(P, ps, L, numKvHeads, headDim));
  const entries = digestEntries([{ pages: bt, start: 0, end: maxCtx }], ps, L);
  const entriesBuf = gpu.upload('bench.entries', entries);
  const arena = new UniformArena(gpu);
  gpu.run((pass) => {
    new PageDigestKernel(gpu).encode(pass, arena, {
      kCache,
      entries: entriesBuf,
      digests,
      numEntries: entries.length / 3,
      numKvHeads,
      headDim,
      pageSize: ps,
      logicalPageSize: L,
    });
  }, arena);
  await gpu.sync();
  arena.destroy();
  const rng = new Rng(5);
  const q = gpu.upload('bench.q', rng.normalArray(numHeads * headDim));
  const out = gpu.createBuffer('bench.out', numHeads * headDim * 4);
  const tokenSeq = gpu.upload('bench.seq', new Uint32Array([0]));
  const posBuf = gpu.createBuffer('bench.pos', 16);
  const scale = 1 / Math.sqrt(headDim);
  const mk = (interval: number) =>
    new SparseDecodeAttention(gpu, {
      numHeads,
      numKvHeads,
      headDim,
      pageSize: ps,
      logicalPageSize: L,
      maxPagesPerSeq: P,
      maxRows: 1,
      numSlots: 1,
      reselectInterval: interval,
    });
  const every = mk(1);
  const reuse = mk(1 << 30);
  const selEvery = every.createLayerSelection();
  const selReuse = reuse.createLayerSelection();
  const dense = new AttentionKernel(gpu);
  const warmArena = new UniformArena(gpu);
  const rows: DecodeRow[] = [];
  const target = o.targetMs ?? 40;
  try {
    for (const ctx of contexts) {
      const pos = ctx - 1;
      gpu.write(posBuf, new Uint32Array([pos]));
      const row = (budget: number) => [{ seqId: 0, blockRow: 0, position: pos, tokenBudget: budget }];
      const layer =
        (att: SparseDecodeAttention, selection: typeof selEvery) => (pass: GPUComputePassEncoder, a: UniformArena) =>
          att.encodeLayer(pass, a, { q, kCache, vCache, blockTable, digests, selection, out, scale });
      o.onProgress?.(`attention ${shape.name} decode @${ctx}: dense`);
      const tDense = await timeRepeats(gpu, o.repeat, target, 1, (pass, a) =>
        dense.encode(pass, a, {
          q,
          kCache,
          vCache,
          blockTable,
          tokenSeq,
          positions: posBuf,
          out,
          T: 1,
          numHeads,
          numKvHeads,
          headDim,
          pageSize: ps,
          maxPagesPerSeq: P,
          scale,
        }),
      );
      // Dense through the sparse kernels: infinite budget, selection kept (every page is "selected").
      const prepReuse = (budget: number) => () => {
        reuse.schedule.onPrefill(0);
        reuse.prepareStep(row(budget)); // reselects (this step's pass selects once, then reuses)
        warmArena.reset();
        gpu.run((pass) => layer(reuse, selReuse)(pass, warmArena), warmArena);
        reuse.prepareStep(row(budget)); // plans a reuse step: attention only
      };
      o.onProgress?.(`attention ${shape.name} decode @${ctx}: dense via sparse kernel`);
      const tDenseSparse = await timeRepeats(
        gpu,
        o.repeat,
        target,
        1,
        layer(reuse, selReuse),
        prepReuse(Number.POSITIVE_INFINITY),
      );
      o.onProgress?.(`attention ${shape.name} decode @${ctx}: sparse, selection every step`);
      const tEvery = await timeRepeats(gpu, o.repeat, target, 1, layer(every, selEvery), () => {
        every.prepareStep(row(o.budget));
      });
      o.onProgress?.(`attention ${shape.name} decode @${ctx}: sparse, attention only`);
      const tAttn = await timeRepeats(gpu, o.repeat, target, 1, layer(reuse, selReuse), prepReuse(o.budget));
      const sel = Math.max(0, tEvery.ms.median - tAttn.ms.median);
      const amort = (x: number) => x + sel / o.reuse;
      const tokens = tokensAttended(ctx, o.budget, ps);
      const dBytes = digestBytes(Math.ceil(ctx / ps), ps, L, numKvHeads, headDim);
      const bytes = {
        dense: ctx * bytesPerToken * 2,
        sparseEvery: tokens * bytesPerToken * 2 + (ctx > o.budget ? dBytes : 0),
        sparseAmortized: tokens * bytesPerToken * 2 + (ctx > o.budget ? dBytes / o.reuse : 0),
        digests: dBytes,
      };
      const ms = {
        dense: tDense.ms,
        denseSparse: tDenseSparse.ms,
        sparseEvery: tEvery.ms,
        sparseAttn: tAttn.ms,
        sparseAmortized: mapStat(tAttn.ms, amort),
      };
      const gb = (b: number, t: number) => b / (t * 1e6);
      rows.push({
        shape: shape.name,
        context: ctx,
        budget: o.budget,
        tokensAttended: tokens,
        stepsPerRepeat: {
          dense: tDense.steps,
          denseSparse: tDenseSparse.steps,
          sparseEvery: tEvery.steps,
          sparseAttn: tAttn.steps,
        },
        ms,
        bytes,
        gbps: {
          dense: gb(bytes.dense, ms.dense.median),
          denseSparse: gb(bytes.dense, ms.denseSparse.median),
          sparseEvery: gb(bytes.sparseEvery, ms.sparseEvery.median),
          sparseAmortized: gb(bytes.sparseAmortized, ms.sparseAmortized.median),
        },
        speedup: {
          every: Math.min(ms.dense.median, ms.denseSparse.median) / ms.sparseEvery.median,
          amortized: Math.min(ms.dense.median, ms.denseSparse.median) / ms.sparseAmortized.median,
        },
      });
    }
  } finally {
    for (const b of [kCache, vCache, blockTable, digests, entriesBuf, q, out, tokenSeq, posBuf]) b.destroy();
    for (const s of [selEvery, selReuse]) {
      s.selected.destroy();
      s.counts.destroy();
    }
    every.destroy();
    reuse.destroy();
    warmArena.destroy();
  }
  return rows;
}

export async function runAttentionBench(gpu: Gpu, o: AttentionBenchOptions): Promise<AttentionBenchResult> {
  const decode: DecodeRow[] = [];
  const prefill: PrefillRow[] = [];
  const selection: SelectionBytesRow[] = [];
  for (const shape of o.shapes) {
    if (o.contexts.length) decode.push(...(await benchDecode(gpu, shape, o)));
    for (const ctx of o.prefillContexts) prefill.push(await benchPrefill(gpu, shape, ctx, o));
    if (o.prefillContexts.length) {
      const ctxs = [...new Set([4096, 16384, 65536, ...o.prefillContexts])].sort((a, b) => a - b);
      selection.push(...selectionBytesRows(shape, ctxs));
    }
  }
  const notes = [
    'one layer, one sequence; random f16 K/V uploaded once; times are wall time per submitted step after a warm-up (median, min..max over repeats)',
  ];
  if (decode.length) {
    notes.push(
      `sparse-amort = attention-only time + (selection-every-step - attention-only) / ${o.reuse} (selection reused for ${o.reuse} steps)`,
      'bandwidth = bytes of K/V (+ page digests when selecting) one step must read / median time',
    );
  }
  if (prefill.some((p) => p.interpolated)) {
    notes.push(
      'prefill: only some 512-token chunks were timed (see timedChunks); the other chunks are linearly interpolated from them',
    );
  }
  return {
    suite: 'attention',
    budget: o.budget,
    reuse: o.reuse,
    repeat: o.repeat,
    pageSize: o.pageSize ?? 64,
    peakGbps: o.peakGbps,
    decode,
    prefill,
    selectionBytes: selection,
    notes,
  };
}

const f = (x: number, d = 2) => x.toFixed(d);
const range = (s: Stat, d = 2) => `${f(s.min, d)}..${f(s.max, d)}`;

export function attentionTables(r: AttentionBenchResult): string {
  const out: string[] = [];
  if (r.decode.length) {
    const peak = r.peakGbps;
    out.push(
      `decode attention, one layer, ms per step (median; min..max), budget ${r.budget}, selection reuse ${r.reuse}`,
      '',
      mdTable(
        [
          'shape',
          'context',
          'dense kernel',
          'dense via sparse kernel',
          'sparse, select every step',
          'sparse, amortized',
          'speedup (amort.)',
          'KV tokens read',
          'GB/s dense / sparse-amort.',
          ...(peak ? ['% of peak dense / sparse'] : []),
        ],
        r.decode.map((d) => [
          d.shape,
          d.context,
          `${f(d.ms.dense.median, 3)} (${range(d.ms.dense, 3)})`,
          `${f(d.ms.denseSparse.median, 3)} (${range(d.ms.denseSparse, 3)})`,
          `${f(d.ms.sparseEvery.median, 3)} (${range(d.ms.sparseEvery, 3)})`,
          `${f(d.ms.sparseAmortized.median, 3)}`,
          `${f(d.speedup.amortized)}x`,
          d.tokensAttended,
          `${f(Math.max(d.gbps.dense, d.gbps.denseSparse), 1)} / ${f(d.gbps.sparseAmortized, 1)}`,
          ...(peak
            ? [
                `${f((100 * Math.max(d.gbps.dense, d.gbps.denseSparse)) / peak, 1)} / ${f((100 * d.gbps.sparseAmortized) / peak, 1)}`,
              ]
            : []),
        ]),
      ),
    );
  }
  if (r.prefill.length) {
    if (out.length) out.push('');
    const interp = r.prefill.some((p) => p.interpolated);
    out.push(
      `prefill attention, one layer, 512-token chunks summed, ms (median; min..max)${interp ? ' - SAMPLED: only the listed chunks were timed, the rest interpolated' : ''}; layout ${r.prefill[0].layouts.main} (one-row column: ${r.prefill[0].layouts.oneRow})`,
      '',
      mdTable(
        [
          'shape',
          'context',
          'chunks timed',
          'dense',
          'dense, one row per invocation',
          'block-sparse (~1/8 blocks)',
          'Lambda (128+256)',
          'speedup bs / Lambda',
          'streaming heads (sink 128 + local 256, ring)',
          'dense GFLOP/s',
          'selection KB first / last chunk',
          'digest KB written per chunk',
        ],
        r.prefill.map((p) => [
          p.shape,
          p.context,
          p.interpolated ? `${p.timedChunks.length}/${p.chunks} (interpolated)` : `${p.chunks}/${p.chunks}`,
          `${f(p.ms.dense.median, 1)} (${range(p.ms.dense, 1)})`,
          `${f(p.ms.denseOneRow.median, 1)} (${range(p.ms.denseOneRow, 1)}) = ${f(p.speedup.block)}x dense`,
          `${f(p.ms.blockSparse.median, 1)} (${range(p.ms.blockSparse, 1)}) top ${p.topBlocks}, ${f(100 * p.keptShare, 1)}%`,
          `${f(p.ms.lambda.median, 1)} (${range(p.ms.lambda, 1)})`,
          `${f(p.speedup.blockSparse)}x / ${f(p.speedup.lambda)}x`,
          `${f(p.ms.streaming.median, 1)} (${range(p.ms.streaming, 1)})`,
          f(p.denseGflops, 1),
          `${f(p.selectionBytes.firstChunk / 1024, 1)} / ${f(p.selectionBytes.lastChunk / 1024, 1)}`,
          f(p.digestBytesPerChunk / 1024, 1),
        ]),
      ),
    );
  }
  if (r.selectionBytes?.length) {
    const h = r.selectionBytes[0].hierarchy;
    out.push(
      '',
      `block selection, bytes one layer reads per 512-token chunk at --prefill-top-blocks ${r.selectionBytes[0].topBlocks} (exact counts: pooled queries + digests): flat = every earlier block scored; hierarchical = groups of ${h.groupBlocks} blocks bounded, the best top + ${h.margin} groups' blocks scored`,
      '',
      mdTable(
        [
          'shape',
          'context',
          'flat KB first / last chunk',
          'hierarchical KB first / last chunk',
          'of which coarse digests (last chunk)',
        ],
        r.selectionBytes.map((x) => [
          x.shape,
          x.context,
          `${f(x.flat.firstChunk / 1024, 1)} / ${f(x.flat.lastChunk / 1024, 1)}`,
          `${f(x.hierarchical.firstChunk / 1024, 1)} / ${f(x.hierarchical.lastChunk / 1024, 1)}`,
          f(x.hierarchical.coarseLast / 1024, 1),
        ]),
      ),
    );
  }
  out.push('', ...r.notes.map((n) => `- ${n}`));
  return out.join('\n');
}
