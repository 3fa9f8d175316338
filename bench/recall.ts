/**
 * `sift bench recall`: attention-mass recall of hierarchical page selection against exhaustive selection, on a real
 * model's keys and queries.
 *
 * A document of real text (stories the model samples itself, or a tokenized file) is prefilled densely; the last
 * `queries` tokens' queries (after RoPE) are captured per layer as the prefill computes them. For each such query
 * (position p) the pages kept within the token budget are chosen twice over the layer's real page digests:
 *   exhaustive    every logical page scored by Quest's bound (shaders/page_select.ts, the kernel hierarchical
 *                 selection replaced);
 *   hierarchical  the digest hierarchy descended as decode does (shaders/digest_levels.ts + shaders/hier_select.ts,
 *                 the engine's hierarchy and margin).
 * Then, per (query, layer, query head), from the keys read back from the cache: the share of the head's softmax
 * attention mass over keys 0..p that lies on each selection's pages (the newest page always counted, as the decode
 * kernel attends to it), and recall = hierarchical mass / exhaustive mass. A baseline of K random pages (with the
 * sink and newest page) shows what a selection that ignored the digests would keep.
 */
import { SiftError } from '../config/errors.js';
import { pagesKept } from '../model/attention/budget.js';
import { buildForwardBatch } from '../model/batch.js';
import type { ModelRunner } from '../model/runner.js';
import { DigestLevelsKernel, hierarchyRows, levelEntries, levelsBytes } from '../shaders/digest_levels.js';
import { GatherRowsKernel } from '../shaders/gather_rows.js';
import { type HierarchyConfig, HierSelectKernel, hierScratchBytes, hierStrides } from '../shaders/hier_select.js';
import { createSlabs, planSlabs, type Slabs } from '../shaders/lib/slabs.js';
import { MAX_SELECT_PAGES, PageSelectKernel, selectScoresBytes } from '../shaders/page_select.js';
import { UniformArena } from '../shaders/runtime.js';
import { f16ToF32 } from '../util/dtype.js';
import { prefillSeq } from './model-steps.js';
import { mdTable } from './stats.js';

export interface RecallOptions {
  /** Document length: the context the queries attend over (tokens before them plus themselves). */
  tokens: number;
  /** Queries measured: the last `queries` tokens of the document. */
  queries: number;
  /** Token budgets; each keeps pagesKept(p + 1, budget, pageSize) pages. */
  budgets: number[];
  /** Seed of the random-page baseline. */
  seed?: number;
  /**
   * The hierarchy measured (default the engine's: 4 pages per level-1 block, 16 of those per level-2 block, margin
   * 16); a tighter one prunes at shorter contexts.
   */
  hierarchy?: HierarchyConfig;
  onProgress?: (msg: string) => void;
}

/** Mean, minimum and 5th percentile of a sample. */
export interface Spread {
  mean: number;
  min: number;
  p5: number;
}

export interface RecallRow {
  budget: number;
  /** Levels whose candidates the margin did not cover at the last query (the descent dropped blocks there). */
  prunedLevels: string[];
  /** Pages the context spans and pages kept, at the last query. */
  pages: number;
  kept: number;
  /** Shares of the softmax mass on the kept pages, over (query, layer, query head). */
  massExhaustive: Spread;
  massHierarchical: Spread;
  massRandom: Spread;
  /** hierarchical mass / exhaustive mass, over (query, layer, query head). */
  recall: Spread;
  /** Share of (query, layer, KV head) whose hierarchical page set equals the exhaustive one. */
  sameSelection: number;
  /** recall.mean per layer. */
  recallByLayer: number[];
}

export interface RecallResult {
  suite: 'recall';
  tokens: number;
  queries: number;
  source: string;
  hierarchy: { fan1: number; fan2: number; margin: number };
  rows: RecallRow[];
  notes: string[];
}

function spread(xs: number[]): Spread {
  const s = [...xs].sort((a, b) => a - b);
  return {
    mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length),
    min: s[0] ?? 0,
    p5: s[Math.floor(0.05 * (s.length - 1))] ?? 0,
  };
}

/** A small deterministic generator for the random baseline. */
function lcg(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

/** Reads a pool (one buffer or slabs) back as u32 words. */
async function readWords(engine: ModelRunner, pool: Slabs): Promise<Uint32Array> {
  const out = new Uint32Array(pool.bytes / 4);
  let at = 0;
  for (const s of pool.slabs) {
    const buf = 'mapState' in s ? s : s.buffer;
    const n = Math.min(buf.size, pool.bytes - at);
    out.set(new Uint32Array(await engine.gpu.read(buf, 0, n)), at / 4);
    at += n;
  }
  return out;
}

export async function runRecall(
  engine: ModelRunner,
  doc: readonly number[],
  o: RecallOptions,
  source: string,
): Promise<RecallResult> {
  const c = engine.config;
  const gpu = engine.gpu;
  const fwd = engine.forwardPass;
  const sparse = fwd.attention.sparse;
  if (!sparse) throw new SiftError('INTERNAL', 'recall: the engine has no sparse decode');
  if (engine.weights.headPlan) throw new SiftError('INVALID_ARGUMENT', 'recall: run without a head pattern');
  const ps = engine.kv.pageSize;
  const L = sparse.logicalPageSize;
  const N = o.tokens;
  const R = o.queries;
  if (doc.length < N || R < 1 || R >= N) {
    throw new SiftError('INVALID_ARGUMENT', `recall: a document of ${doc.length} tokens, ${N} wanted, ${R} queries`);
  }
  const P = Math.ceil(N / ps);
  const M = fwd.maxPagesPerSeq;
  if (M > MAX_SELECT_PAGES) {
    throw new SiftError('INVALID_ARGUMENT', `recall: exhaustive selection scores at most ${MAX_SELECT_PAGES} pages`);
  }
  if (P > M || P > engine.kv.numPages) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `recall: ${N} tokens need ${P} pages (raise --max-context / --kv-cache-mib)`,
    );
  }
  const H = c.numHeads;
  const KV = c.numKvHeads;
  const hd = c.headDim;
  const group = H / KV;
  const table = Uint32Array.from({ length: M }, (_, j) => (j < P ? j : 0));
  const arena = new UniformArena(gpu);
  // 1. prefill all but the last R tokens, then the last R with their queries captured per layer
  o.onProgress?.(`recall: prefilling ${N - R} tokens`);
  await prefillSeq(engine, 'bench-recall', doc.slice(0, N - R), table);
  const align = gpu.caps.minStorageBufferOffsetAlignment;
  const qBytes = R * H * hd * 4;
  const qStride = Math.ceil(qBytes / align) * align;
  const qCap = gpu.createBuffer('recall.q', c.numLayers * qStride); // (layers, R, H, hd) f32
  const rowIds = gpu.upload(
    'recall.rows',
    Uint32Array.from({ length: R }, (_, i) => i),
  );
  const gather = new GatherRowsKernel(gpu);
  const batch = buildForwardBatch(
    [
      {
        kind: 'prefill',
        seqId: 'bench-recall',
        start: N - R,
        tokens: doc.slice(N - R, N),
        pages: table,
        sample: false,
      },
    ],
    { maxPagesPerSeq: M },
  );
  fwd.encode(batch, (pass, a, li, b) =>
    gather.encode(pass, a, {
      x: b.q,
      rowIds,
      out: { buffer: qCap, offset: li * qStride, size: qBytes },
      rows: R,
      n: H * hd,
      srcRows: b.T,
    }),
  );
  await gpu.sync();
  engine.release('bench-recall');
  const qAll = await gpu.readF32(qCap, (c.numLayers * qStride) / 4);
  // 2. per layer: keys and page selections
  const positions = Array.from({ length: R }, (_, r) => N - R + r);
  const h = o.hierarchy ?? sparse.hierarchy;
  const rowsHier = hierarchyRows(M, h.fan1, h.fan2);
  const levels = createSlabs(
    gpu,
    'recall.levels',
    planSlabs(levelsBytes(1, rowsHier.blocksPerSlot, KV, hd), R, gpu.caps.maxStorageBufferBindingSize),
  );
  const entries = levelEntries(
    positions.map((p, r) => ({ blockRow: 0, slot: r, start: 0, end: p + 1 })),
    ps,
    h.fan1,
    h.fan2,
  );
  const entriesBuf = gpu.upload('recall.entries', entries);
  const tableBuf = gpu.upload('recall.table', table);
  const selectRows = gpu.upload(
    'recall.select',
    Uint32Array.from({ length: R }, (_, i) => i),
  );
  const levelsKernel = new DigestLevelsKernel(gpu);
  const hier = new HierSelectKernel(gpu, { hierarchy: h });
  const exhaustive = new PageSelectKernel(gpu);
  const maxSelected = P;
  const strides = hierStrides(h, M, maxSelected);
  const sb = hierScratchBytes(R, KV, strides);
  const scratch = {
    keys: gpu.createBuffer('recall.keys', sb.keys),
    ids: gpu.createBuffer('recall.ids', sb.keys),
    candA: gpu.createBuffer('recall.candA', sb.cand),
    candB: gpu.createBuffer('recall.candB', sb.cand),
  };
  const scores = gpu.createBuffer('recall.scores', selectScoresBytes(R, KV, M));
  const selBytes = R * KV * maxSelected * 4;
  const sel = [gpu.createBuffer('recall.sel.h', selBytes), gpu.createBuffer('recall.sel.e', selBytes)];
  const cnt = [gpu.createBuffer('recall.cnt.h', R * KV * 4), gpu.createBuffer('recall.cnt.e', R * KV * 4)];
  const scale = 1 / Math.sqrt(hd);
  const rand = lcg(o.seed ?? 7);
  const acc = o.budgets.map(() => ({
    exh: [] as number[],
    hier: [] as number[],
    rnd: [] as number[],
    recall: [] as number[],
    same: 0,
    sets: 0,
    byLayer: Array.from({ length: c.numLayers }, () => [] as number[]),
  }));
  try {
    for (let li = 0; li < c.numLayers; li++) {
      o.onProgress?.(`recall: layer ${li + 1}/${c.numLayers}`);
      const kWords = await readWords(engine, engine.kv.layers[li].k); // (numPages, ps, KV, hd / 2) f16 pairs
      const digests = fwd.attention.digests(li)!;
      const q = qAll.subarray((li * qStride) / 4, (li * qStride) / 4 + R * H * hd);
      const qBuf = { buffer: qCap, offset: li * qStride, size: qBytes };
      // softmax mass of every (row, query head) over its keys, summed per page
      const pageMass = new Float64Array(R * H * P);
      for (let r = 0; r < R; r++) {
        const n = positions[r] + 1;
        for (let g = 0; g < H; g++) {
          const kvh = Math.floor(g / group);
          const qo = (r * H + g) * hd;
          const s = new Float64Array(n);
          let mx = Number.NEGATIVE_INFINITY;
          for (let j = 0; j < n; j++) {
            const w0 = ((table[Math.floor(j / ps)] * ps + (j % ps)) * KV + kvh) * (hd / 2);
            let dot = 0;
            for (let w = 0; w < hd / 2; w++) {
              const word = kWords[w0 + w];
              dot += q[qo + 2 * w] * f16ToF32(word & 0xffff) + q[qo + 2 * w + 1] * f16ToF32(word >>> 16);
            }
            s[j] = dot * scale;
            mx = Math.max(mx, s[j]);
          }
          let z = 0;
          for (let j = 0; j < n; j++) z += Math.exp(s[j] - mx);
          for (let j = 0; j < n; j++) pageMass[(r * H + g) * P + Math.floor(j / ps)] += Math.exp(s[j] - mx) / z;
        }
      }
      for (const [bi, budget] of o.budgets.entries()) {
        const rows = new Uint32Array(R * 4);
        positions.forEach((p, r) => {
          rows.set([0, p, r, pagesKept(p + 1, budget, ps)], 4 * r);
        });
        const rowsBuf = gpu.upload('recall.rowinfo', rows);
        const shape = {
          q: qBuf,
          digests,
          blockTable: tableBuf,
          rows: rowsBuf,
          selectRows,
          numSelect: R,
          numHeads: H,
          numKvHeads: KV,
          headDim: hd,
          pageSize: ps,
          logicalPageSize: L,
          maxPagesPerSeq: M,
          maxSelected,
        };
        arena.reset();
        gpu.run((pass) => {
          levelsKernel.encode(pass, arena, {
            digests,
            blockTable: tableBuf,
            entries: entriesBuf,
            levels,
            numKvHeads: KV,
            headDim: hd,
            pageSize: ps,
            logicalPageSize: L,
            maxPagesPerSeq: M,
            fan1: h.fan1,
            fan2: h.fan2,
            grid: { entries: entries[0] },
          });
          hier.encode(pass, arena, { ...shape, levels, selected: sel[0], counts: cnt[0], ...scratch });
          exhaustive.encode(pass, arena, { ...shape, selected: sel[1], counts: cnt[1], scores, maxPages: P });
        }, arena);
        const got = await Promise.all([...sel, ...cnt].map((b) => gpu.readU32(b)));
        rowsBuf.destroy();
        const pagesOf = (which: 0 | 1, r: number, kvh: number): Set<number> => {
          const n = got[2 + which][r * KV + kvh];
          const base = (r * KV + kvh) * maxSelected;
          const set = new Set(Array.from(got[which].subarray(base, base + n)));
          set.add(Math.floor(positions[r] / ps)); // the newest page: attended whether or not the list holds it
          return set;
        };
        const a = acc[bi];
        for (let r = 0; r < R; r++) {
          const Pr = Math.floor(positions[r] / ps) + 1;
          const K = pagesKept(positions[r] + 1, budget, ps);
          for (let kvh = 0; kvh < KV; kvh++) {
            const hs = pagesOf(0, r, kvh);
            const es = pagesOf(1, r, kvh);
            a.sets++;
            if (hs.size === es.size && [...hs].every((x) => es.has(x))) a.same++;
            // random baseline: sink + newest + K - 2 other pages
            const rs = new Set([0, Pr - 1]);
            while (rs.size < Math.min(K, Pr)) rs.add(1 + Math.floor(rand() * Math.max(1, Pr - 2)));
            for (let g = kvh * group; g < (kvh + 1) * group; g++) {
              const m = pageMass.subarray((r * H + g) * P, (r * H + g + 1) * P);
              const sum = (set: Set<number>) => [...set].reduce((x, pg) => x + m[pg], 0);
              const me = sum(es);
              const mh = sum(hs);
              a.exh.push(me);
              a.hier.push(mh);
              a.rnd.push(sum(rs));
              a.recall.push(mh / me);
              a.byLayer[li].push(mh / me);
            }
          }
        }
      }
    }
  } finally {
    arena.destroy();
    for (const b of [
      qCap,
      rowIds,
      entriesBuf,
      tableBuf,
      selectRows,
      scores,
      ...sel,
      ...cnt,
      ...Object.values(scratch),
    ]) {
      b.destroy();
    }
    levels.destroy();
  }
  const rows: RecallRow[] = o.budgets.map((budget, bi) => {
    const a = acc[bi];
    const K = pagesKept(N, budget, ps);
    const n1 = Math.ceil(P / h.fan1);
    const n2 = Math.ceil(n1 / h.fan2);
    const beam = K + h.margin;
    const pruned = [
      ...(n2 > beam ? ['level 2'] : []),
      ...(Math.min(beam, n2) * h.fan2 > beam && n1 > beam ? ['level 1'] : []),
    ];
    return {
      budget,
      prunedLevels: pruned,
      pages: P,
      kept: pagesKept(N, budget, ps),
      massExhaustive: spread(a.exh),
      massHierarchical: spread(a.hier),
      massRandom: spread(a.rnd),
      recall: spread(a.recall),
      sameSelection: a.same / Math.max(1, a.sets),
      recallByLayer: a.byLayer.map((xs) => spread(xs).mean),
    };
  });
  const notes = [
    `${N}-token document (${source}); queries of its last ${R} tokens, captured per layer during the dense prefill; ${c.numLayers} layers x ${H} query heads (${KV} KV heads) each`,
    'mass = share of the head\'s softmax over keys 0..p on the kept pages (newest page included); recall = hierarchical mass / exhaustive mass; "same" = share of (query, layer, KV head) with identical page sets',
    `hierarchy fan1 ${h.fan1} (pages per level-1 block), fan2 ${h.fan2}, margin ${h.margin}${o.hierarchy ? ' (not the engine default)' : " (the engine's)"}; pages of ${ps} tokens; exhaustive = every logical page scored (page_select)`,
  ];
  const trained = c.maxPositionEmbeddings;
  if (N > trained) {
    notes.push(
      `the model's trained context is ${trained} tokens; the keys and queries past it are the model's real ones, but its attention there is not trained`,
    );
  }
  return { suite: 'recall', tokens: N, queries: R, source, hierarchy: { ...h }, rows, notes };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export function recallTable(r: RecallResult): string {
  return [
    `attention-mass recall of hierarchical vs exhaustive page selection, ${r.tokens} tokens, ${r.queries} queries`,
    '',
    mdTable(
      [
        'budget',
        'pages kept / context',
        'levels pruned',
        'recall mean (min, p5)',
        'same pages',
        'mass exhaustive',
        'mass hierarchical',
        'mass random pages',
        'recall by layer',
      ],
      r.rows.map((x) => [
        x.budget,
        `${x.kept} / ${x.pages}`,
        x.prunedLevels.join(', ') || 'none',
        `${pct(x.recall.mean)} (${pct(x.recall.min)}, ${pct(x.recall.p5)})`,
        pct(x.sameSelection),
        pct(x.massExhaustive.mean),
        pct(x.massHierarchical.mean),
        pct(x.massRandom.mean),
        x.recallByLayer.map((v) => pct(v)).join(' '),
      ]),
    ),
    '',
    ...r.notes.map((n) => `- ${n}`),
  ].join('\n');
}
