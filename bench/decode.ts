/**
 * `sift bench decode`: model-level decode step time, dense (token budget Infinity) vs sparse (page selection within
 * the budget, reselected every `reuse` steps as the engine does), at several context lengths of one sequence.
 *
 * The KV cache is filled by a real prefill of the largest context once (pseudo-random token ids); each context c is
 * then measured by decoding at positions c, c+1, ... (the prefix 0..c-1 is the prefill's). With `fillTokens` < the
 * largest context only that many tokens are prefilled and the block table repeats their pages up to the context
 * (said in the output): the work per step is the same, but on a machine with large caches a repeated page set may
 * be cache-resident, which flatters dense. With `fillCopy` the prefilled pages are instead copied (K, V and digests)
 * into distinct physical pages up to the largest context: a real KV cache of that many tokens in memory, every page
 * its own (the cache must hold them: --kv-cache-mib).
 */
import { SiftError } from '../config/errors.js';
import { argmax } from '../engine/sampler.js';
import { pagesKept, tokensAttended } from '../model/attention/budget.js';
import type { ModelRunner } from '../model/runner.js';
import { selectionDigests } from '../shaders/hier_select.js';
import { decodeBatch, prefillSeq, pseudoTokens } from './model-steps.js';
import { mapStat, mdTable, type Stat, stat } from './stats.js';

export interface DecodeBenchOptions {
  contexts: number[];
  budget: number;
  /** Decode steps per timed repeat (a multiple of the reuse interval amortizes the selection exactly). */
  steps: number;
  repeat: number;
  /** Tokens really prefilled (default: the largest context). */
  fillTokens?: number;
  /** With fillTokens: copy the prefilled pages into distinct pages up to the context instead of tiling the table. */
  fillCopy?: boolean;
  /** Measure the sparse mode only (dense at 1M tokens takes minutes a step on a CPU adapter). */
  sparseOnly?: boolean;
  onProgress?: (msg: string) => void;
}

export interface DecodeBenchResult {
  suite: 'decode';
  budget: number;
  reuse: number;
  steps: number;
  repeat: number;
  trainedContext: number;
  filled: { tokens: number; prefillMs: number; tiled: boolean; copiedPages: number; copyMs: number };
  rows: {
    context: number;
    tokensAttended: { dense: number; sparse: number };
    /** dense: absent with sparseOnly. */
    msPerStep: { dense?: Stat; sparse: Stat };
    tokensPerS: { dense?: Stat; sparse: Stat };
    speedup?: number;
    /**
     * Page selection of the sparse mode: digest bytes read per decode step (a reselection's reads over the reuse
     * interval, all layers and KV heads), what exhaustive scoring of every logical page would read, and the share
     * of the step's time spent selecting ((reselecting step - reusing step) / reuse, over the mean step).
     */
    selection: { bytesPerStep: number; exhaustiveBytesPerStep: number; ms: number; share: number };
  }[];
  notes: string[];
}

let runId = 0;

export async function runDecodeBench(engine: ModelRunner, o: DecodeBenchOptions): Promise<DecodeBenchResult> {
  const ps = engine.kv.pageSize;
  const contexts = [...o.contexts].sort((a, b) => a - b);
  const maxCtx = contexts[contexts.length - 1];
  const need = maxCtx + o.steps;
  if (need > engine.maxContext)
    throw new SiftError(
      'INVALID_ARGUMENT',
      `context ${maxCtx} + ${o.steps} steps exceeds --max-context ${engine.maxContext}`,
    );
  const M = engine.forwardPass.maxPagesPerSeq;
  const fill = Math.min(o.fillTokens ?? maxCtx, maxCtx);
  const copy = !!o.fillCopy && fill < maxCtx;
  const tiled = fill < maxCtx && !copy;
  const fillPages = Math.ceil((tiled ? fill : need) / ps);
  if (fillPages > engine.kv.numPages) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `${need} tokens need ${fillPages} KV pages; the cache holds ${engine.kv.numPages} (raise --kv-cache-mib)`,
    );
  }
  // Tiled: only the first `fill` tokens' pages are real; the table repeats them (whole pages of the fill).
  // Copied: the same prefill, then its pages copied into pages realPages.. so every page of the table is its own.
  const short = tiled || copy;
  const realPages = short ? Math.max(1, Math.floor(fill / ps)) : fillPages;
  const table = Uint32Array.from({ length: M }, (_, j) => j % realPages);
  const vocab = engine.config.vocabSize;
  o.onProgress?.(`decode bench: prefilling ${short ? realPages * ps : maxCtx} tokens`);
  const t0 = performance.now();
  let logits = await prefillSeq(engine, 'bench-fill', pseudoTokens(short ? realPages * ps : maxCtx, vocab, 3), table);
  const prefillMs = performance.now() - t0;
  engine.release('bench-fill');
  let copyMs = 0;
  if (copy) {
    const dst = Array.from({ length: fillPages - realPages }, (_, i) => realPages + i);
    o.onProgress?.(`decode bench: copying ${realPages} pages into ${dst.length} more`);
    const t1 = performance.now();
    await engine.copyPages(
      dst.map((d) => d % realPages),
      dst,
    );
    copyMs = performance.now() - t1;
    table.forEach((_, j) => {
      table[j] = j;
    });
  }
  const rows: DecodeBenchResult['rows'] = [];
  for (const ctx of contexts) {
    const ms: Record<'dense' | 'sparse', number[]> = { dense: [], sparse: [] };
    const stepMs: Record<'select' | 'reuse', number[]> = { select: [], reuse: [] };
    const reuse = engine.attentionConfig.reuseInterval;
    for (const mode of o.sparseOnly ? (['sparse'] as const) : (['dense', 'sparse'] as const)) {
      const budget = mode === 'dense' ? Number.POSITIVE_INFINITY : o.budget;
      const id = `bench-dec-${runId++}`; // fresh id: the first step selects (as after a prefill)
      let n = 0;
      for (let r = 0; r <= o.repeat; r++) {
        o.onProgress?.(`decode @${ctx} ${mode}: ${r === 0 ? 'warm-up' : `repeat ${r}/${o.repeat}`}`);
        const t = performance.now();
        for (let s = 0; s < o.steps; s++) {
          const t1 = performance.now();
          logits = await decodeBatch(engine, [id], [argmax(logits)], [ctx + s], table, budget);
          if (r > 0 && mode === 'sparse') stepMs[n % reuse === 0 ? 'select' : 'reuse'].push(performance.now() - t1);
          n++;
        }
        if (r > 0) ms[mode].push((performance.now() - t) / o.steps);
      }
      engine.release(id);
    }
    const dense = o.sparseOnly ? undefined : stat(ms.dense);
    const sparse = stat(ms.sparse);
    const c = engine.config;
    const lpp = ps / engine.attentionConfig.logicalPageSize;
    const P = Math.ceil((ctx + 1) / ps);
    const K = pagesKept(ctx + 1, o.budget, ps);
    const hier = engine.forwardPass.attention.sparse?.hierarchy;
    const perDigest = 2 * c.headDim * 2; // (min, max) f16
    const heads = c.numLayers * c.numKvHeads; // every layer's retrieval heads (no head plan in this bench)
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const selectMs = Math.max(0, stat(stepMs.select).median - stat(stepMs.reuse).median) / reuse;
    rows.push({
      context: ctx,
      tokensAttended: { dense: ctx + 1, sparse: tokensAttended(ctx + 1, o.budget, ps) },
      msPerStep: { dense, sparse },
      tokensPerS: { dense: dense && mapStat(dense, (t) => 1000 / t), sparse: mapStat(sparse, (t) => 1000 / t) },
      speedup: dense && dense.median / sparse.median,
      selection: {
        bytesPerStep: hier ? (selectionDigests(hier, P, K, lpp) * perDigest * heads) / reuse : 0,
        exhaustiveBytesPerStep: K < P ? (P * lpp * perDigest * heads) / reuse : 0,
        ms: selectMs,
        share: selectMs / mean([...stepMs.select, ...stepMs.reuse]),
      },
    });
  }
  const trained = engine.config.maxPositionEmbeddings;
  const notes = [
    `one sequence; ${o.steps} decode steps per repeat (logits read back each step), ${o.repeat} repeats after a warm-up; the sparse selection is recomputed every ${engine.attentionConfig.reuseInterval} steps, so its cost is amortized as in serving`,
    `KV filled by one real prefill of ${tiled ? `${realPages * ps} tokens, block table repeating those pages up to each context (tiled)` : copy ? `${realPages * ps} tokens whose pages were copied (K, V, digests) into ${fillPages - realPages} more distinct pages: ${fillPages} pages in memory, ${engine.kv.mainPlan?.numSlabs ?? 1} slab(s) per layer K/V pool` : `${maxCtx} pseudo-random tokens`}; each context decodes at positions context..context+${o.steps - 1}`,
  ];
  if (maxCtx > trained) {
    notes.push(
      `the model's trained context is ${trained} tokens: positions beyond it are fine for timing, but its outputs (and sparse-vs-dense quality) there are not meaningful`,
    );
  }
  return {
    suite: 'decode',
    budget: o.budget,
    reuse: engine.attentionConfig.reuseInterval,
    steps: o.steps,
    repeat: o.repeat,
    trainedContext: trained,
    filled: {
      tokens: short ? realPages * ps : maxCtx,
      prefillMs,
      tiled,
      copiedPages: copy ? fillPages - realPages : 0,
      copyMs,
    },
    rows,
    notes,
  };
}

const f = (x: number, d = 1) => x.toFixed(d);
const ms = (s: Stat | undefined) => (s ? `${f(s.median)} (${f(s.min)}..${f(s.max)})` : '-');

export function decodeTable(r: DecodeBenchResult): string {
  return [
    `model decode step, ms (median; min..max), budget ${r.budget}, selection reuse ${r.reuse}`,
    '',
    mdTable(
      [
        'context',
        'dense ms/step',
        'sparse ms/step',
        'dense tok/s',
        'sparse tok/s',
        'speedup',
        'KV tokens/head dense / sparse',
        'selection KiB/step (exhaustive)',
        'selecting share',
      ],
      r.rows.map((x) => [
        x.context,
        ms(x.msPerStep.dense),
        ms(x.msPerStep.sparse),
        x.tokensPerS.dense ? f(x.tokensPerS.dense.median) : '-',
        f(x.tokensPerS.sparse.median),
        x.speedup === undefined ? '-' : `${x.speedup.toFixed(2)}x`,
        `${x.tokensAttended.dense} / ${x.tokensAttended.sparse}`,
        `${f(x.selection.bytesPerStep / 1024)} (${f(x.selection.exhaustiveBytesPerStep / 1024)})`,
        `${f(100 * x.selection.share)}%`,
      ]),
    ),
    '',
    ...r.notes.map((n) => `- ${n}`),
  ].join('\n');
}
