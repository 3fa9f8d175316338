/**
 * Streaming-head calibration without training (`sift calibrate`): run the model densely over text and score each
 * (layer, KV head) by the mean share of its attention mass that falls outside the streaming window (sink + local),
 * over every query token whose causal context reaches past that window (GQA: mean over the group's query heads).
 * A head that keeps almost all its mass in the sink and the recent window loses little by streaming; higher score =
 * retrieval head (DuoAttention's convention), so the output TSV feeds engine/head-plan.ts directly.
 *
 * The dense pass here is the forward pass's layer loop without logits (engine/forward.ts is the one to keep in step
 * with: norm -> q/k/v (+bias) -> RoPE -> kv_write -> attention -> o -> residual -> MLP), plus one attention_mass
 * dispatch per layer after kv_write. Text is taken in windows of `windowTokens` tokens (a fresh sequence each),
 * prefilled in chunks of `chunkTokens`.
 */
import { SiftError } from '../config/errors.js';
import { AttentionKernel, KvWriteKernel } from '../shaders/attention.js';
import { AttentionMassKernel } from '../shaders/attention_mass.js';
import { EmbeddingKernel } from '../shaders/embedding.js';
import { MatmulKernel } from '../shaders/matmul.js';
import { ResidualAddKernel } from '../shaders/residual_add.js';
import { RmsNormKernel } from '../shaders/rmsnorm.js';
import { RopeKernel, ropeInvFreq } from '../shaders/rope.js';
import { type Gpu, UniformArena } from '../shaders/runtime.js';
import { SwiGluKernel } from '../shaders/swiglu.js';
import { KvStorage } from './kv-storage.js';
import type { ModelWeights } from './model/weights.js';

/** Per (layer, query head) sums of the outside-window mass over qualifying tokens; scores per KV head. */
export class HeadMassAccumulator {
  private readonly sums: Float64Array; // (numLayers, numHeads)
  private readonly counts: Float64Array; // (numLayers)
  constructor(
    readonly numLayers: number,
    readonly numHeads: number,
    readonly numKvHeads: number,
    readonly sinkTokens: number,
    readonly localTokens: number,
  ) {
    this.sums = new Float64Array(numLayers * numHeads);
    this.counts = new Float64Array(numLayers);
  }

  /** Adds one layer's mass (T, numHeads) of tokens at `positions`; tokens whose window covers all keys are skipped. */
  add(layer: number, mass: Float32Array, positions: ArrayLike<number>): void {
    const H = this.numHeads;
    for (let t = 0; t < positions.length; t++) {
      if (positions[t] < this.sinkTokens + this.localTokens) continue; // nothing lies outside the window
      for (let h = 0; h < H; h++) this.sums[layer * H + h] += mass[t * H + h];
      this.counts[layer]++;
    }
  }

  /** Tokens that counted (per layer; equal across layers). */
  get tokensCounted(): number {
    return this.counts[0] ?? 0;
  }

  /** (numLayers, numKvHeads) mean outside-window mass, averaged over each KV head's query heads. */
  scores(): number[][] {
    if (this.tokensCounted === 0) {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `calibration saw no token past the window (sink ${this.sinkTokens} + local ${this.localTokens}): use a longer ` +
          'text, a larger window length or smaller --sink/--local',
      );
    }
    const group = this.numHeads / this.numKvHeads;
    return Array.from({ length: this.numLayers }, (_, l) =>
      Array.from({ length: this.numKvHeads }, (_, kv) => {
        let s = 0;
        for (let g = 0; g < group; g++) s += this.sums[l * this.numHeads + kv * group + g];
        return s / group / this.counts[l];
      }),
    );
  }
}

/** The head-pattern TSV: a '#' header line, then one line per layer of tab-separated scores. */
export function formatHeadPattern(scores: number[][], header: string): string {
  const lines = [
    `# ${header.replace(/\n/g, ' ')}`,
    ...scores.map((row) => row.map((x) => x.toPrecision(6)).join('\t')),
  ];
  return `${lines.join('\n')}\n`;
}

export interface CalibrationOptions {
  sinkTokens: number;
  localTokens: number;
  /** Tokens per window (a fresh sequence each); at most the model's context. */
  windowTokens: number;
  /** Tokens per forward chunk (default 64). */
  chunkTokens?: number;
  pageSize?: number;
  onProgress?: (tokensDone: number, tokensTotal: number) => void;
}

/** Runs the model densely over `ids` in windows and returns the accumulator with every layer's masses. */
export async function calibrateHeads(
  gpu: Gpu,
  w: ModelWeights,
  ids: readonly number[],
  opts: CalibrationOptions,
): Promise<HeadMassAccumulator> {
  const c = w.config;
  if (w.headPlan) throw new SiftError('INTERNAL', 'calibrate: weights must be in their original head order');
  const chunk = opts.chunkTokens ?? 64;
  const pageSize = opts.pageSize ?? 16;
  const win = opts.windowTokens;
  if (!Number.isInteger(win) || win < 1) throw new SiftError('INVALID_ARGUMENT', `window of ${win} tokens`);
  const acc = new HeadMassAccumulator(c.numLayers, c.numHeads, c.numKvHeads, opts.sinkTokens, opts.localTokens);
  const maxPages = Math.ceil(win / pageSize);
  const kv = new KvStorage(gpu, c, maxPages, pageSize);
  const arena = new UniformArena(gpu);
  const k = {
    embed: new EmbeddingKernel(gpu),
    norm: new RmsNormKernel(gpu),
    matmul: new MatmulKernel(gpu),
    rope: new RopeKernel(gpu),
    kvWrite: new KvWriteKernel(gpu),
    attn: new AttentionKernel(gpu),
    mass: new AttentionMassKernel(gpu),
    add: new ResidualAddKernel(gpu),
    swiglu: new SwiGluKernel(gpu),
  };
  const b: Record<string, GPUBuffer> = {};
  const f = (name: string, elems: number) => {
    b[name] = gpu.createBuffer(`calib.${name}`, elems * 4);
  };
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  f('h', chunk * c.hiddenSize); // (T, hidden)
  f('xn', chunk * c.hiddenSize); // (T, hidden)
  f('q', chunk * qDim); // (T, heads, headDim)
  f('k', chunk * kvDim); // (T, kvHeads, headDim)
  f('v', chunk * kvDim); // (T, kvHeads, headDim)
  f('attn', chunk * qDim); // (T, heads, headDim)
  f('proj', chunk * c.hiddenSize); // (T, hidden)
  f('gate', chunk * c.intermediateSize); // (T, inter)
  f('up', chunk * c.intermediateSize); // (T, inter)
  f('act', chunk * c.intermediateSize); // (T, inter)
  f('mass', c.numLayers * chunk * c.numHeads); // (layers, T, heads) mass outside the window
  f('ids', chunk); // (T) u32
  f('pos', chunk); // (T) u32
  f('seq', chunk); // (T) u32, all 0
  const table = gpu.upload(
    'calib.table',
    Uint32Array.from({ length: maxPages }, (_, i) => i),
  ); // (1, maxPages)
  const invFreq = gpu.upload('calib.invFreq', ropeInvFreq(c.headDim, c.ropeTheta, c.ropeScaling));
  const massBytes = chunk * c.numHeads * 4;
  const massStride =
    Math.ceil(massBytes / gpu.caps.minStorageBufferOffsetAlignment) * gpu.caps.minStorageBufferOffsetAlignment;
  b.mass.destroy();
  b.mass = gpu.createBuffer('calib.mass', c.numLayers * massStride);
  try {
    let done = 0;
    for (let w0 = 0; w0 < ids.length; w0 += win) {
      const window = ids.slice(w0, w0 + win);
      for (let s = 0; s < window.length; s += chunk) {
        const part = window.slice(s, s + chunk);
        const T = part.length;
        const positions = Uint32Array.from(part, (_, i) => s + i);
        for (const id of part) {
          if (id < 0 || id >= c.vocabSize)
            throw new SiftError('INVALID_ARGUMENT', `token id ${id} outside the vocabulary`);
        }
        gpu.write(b.ids, Uint32Array.from(part));
        gpu.write(b.pos, positions);
        gpu.write(b.seq, new Uint32Array(T));
        arena.reset();
        const hidden = c.hiddenSize;
        gpu.run((pass) => {
          k.embed.encode(pass, arena, { ids: b.ids, table: w.embed, out: b.h, T });
          for (let li = 0; li < c.numLayers; li++) {
            const L = w.layers[li];
            const cache = kv.layers[li];
            const paged = {
              blockTable: table,
              tokenSeq: b.seq,
              positions: b.pos,
              T,
              headDim: c.headDim,
              pageSize,
              maxPagesPerSeq: maxPages,
            };
            k.norm.encode(pass, arena, {
              x: b.h,
              weight: L.attnNorm,
              out: b.xn,
              rows: T,
              n: hidden,
              eps: c.rmsNormEps,
            });
            k.matmul.encode(pass, arena, { x: b.xn, w: L.q, bias: L.qBias ?? undefined, out: b.q, T });
            k.matmul.encode(pass, arena, { x: b.xn, w: L.k, bias: L.kBias ?? undefined, out: b.k, T });
            k.matmul.encode(pass, arena, { x: b.xn, w: L.v, bias: L.vBias ?? undefined, out: b.v, T });
            k.rope.encode(pass, arena, {
              q: b.q,
              k: b.k,
              positions: b.pos,
              invFreq,
              tokens: T,
              nHeads: c.numHeads,
              nKvHeads: c.numKvHeads,
              headDim: c.headDim,
            });
            k.kvWrite.encode(pass, arena, {
              ...paged,
              k: b.k,
              v: b.v,
              kCache: cache.k,
              vCache: cache.v,
              numKvHeads: c.numKvHeads,
            });
            const scale = 1 / Math.sqrt(c.headDim);
            k.mass.encode(pass, arena, {
              ...paged,
              q: b.q,
              kCache: cache.k,
              mass: { buffer: b.mass, offset: li * massStride, size: massBytes },
              numHeads: c.numHeads,
              numKvHeads: c.numKvHeads,
              scale,
              sinkTokens: opts.sinkTokens,
              localTokens: opts.localTokens,
            });
            k.attn.encode(pass, arena, {
              ...paged,
              q: b.q,
              kCache: cache.k,
              vCache: cache.v,
              out: b.attn,
              numHeads: c.numHeads,
              numKvHeads: c.numKvHeads,
              scale,
            });
            k.matmul.encode(pass, arena, { x: b.attn, w: L.o, out: b.proj, T });
            k.add.encode(pass, arena, { a: b.h, b: b.proj, n: T * hidden });
            k.norm.encode(pass, arena, { x: b.h, weight: L.mlpNorm, out: b.xn, rows: T, n: hidden, eps: c.rmsNormEps });
            k.matmul.encode(pass, arena, { x: b.xn, w: L.gate, out: b.gate, T });
            k.matmul.encode(pass, arena, { x: b.xn, w: L.up, out: b.up, T });
            k.swiglu.encode(pass, arena, { gate: b.gate, up: b.up, out: b.act, rows: T, n: c.intermediateSize });
            k.matmul.encode(pass, arena, { x: b.act, w: L.down, out: b.proj, T });
            k.add.encode(pass, arena, { a: b.h, b: b.proj, n: T * hidden });
          }
        }, arena);
        if (positions[T - 1] >= opts.sinkTokens + opts.localTokens) {
          const all = await gpu.readF32(b.mass, (c.numLayers * massStride) / 4);
          for (let li = 0; li < c.numLayers; li++) {
            acc.add(li, all.subarray((li * massStride) / 4, (li * massStride) / 4 + T * c.numHeads), positions);
          }
        }
        done += T;
        opts.onProgress?.(done, ids.length);
      }
    }
    await gpu.sync();
    return acc;
  } finally {
    for (const buf of Object.values(b)) buf.destroy();
    table.destroy();
    invFreq.destroy();
    kv.destroy();
    arena.destroy();
  }
}
