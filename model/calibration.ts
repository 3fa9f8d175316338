/**
 * Streaming-head calibration without training (`sift calibrate`): run the model densely over text and score each
 * (layer, KV head) by the mean share of its attention mass that falls outside the streaming window (sink + local),
 * over every query token whose causal context reaches past that window (GQA: mean over the group's query heads).
 * A head that keeps almost all its mass in the sink and the recent window loses little by streaming; higher score =
 * retrieval head (DuoAttention's convention), so the output TSV feeds model/head-plan.ts directly.
 *
 * The dense pass is the engine's own forward pass (no logits), with one attention_mass dispatch per layer tapped in
 * after the layer's attention. Text is taken in windows of `windowTokens` tokens (a fresh sequence each), prefilled
 * in chunks of the engine's maxBatchTokens.
 */
import { attentionSoftmaxScale, layerRopeConfig } from '../checkpoint/rope.js';
import { SiftError } from '../config/errors.js';
import { AttentionMassKernel } from '../shaders/attention_mass.js';
import { forEachWindowChunk } from './activation-pass.js';
import type { ModelRunner } from './runner.js';

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
  /** Tokens per window (a fresh sequence each); at most the engine's context. */
  windowTokens: number;
  onProgress?: (tokensDone: number, tokensTotal: number) => void;
}

/**
 * Runs the engine's forward pass densely over `ids` in windows (prefill chunks of its maxBatchTokens) and returns the
 * accumulator with every layer's masses, measured by one attention_mass dispatch per layer tapped in after the
 * layer's attention. The engine must hold every head as a retrieval head in its original order (no head pattern).
 */
export async function calibrateHeads(
  engine: ModelRunner,
  ids: readonly number[],
  opts: CalibrationOptions,
): Promise<HeadMassAccumulator> {
  const c = engine.config;
  const gpu = engine.gpu;
  const fwd = engine.forwardPass;
  const pageSize = engine.kv.pageSize;
  const acc = new HeadMassAccumulator(c.numLayers, c.numHeads, c.numKvHeads, opts.sinkTokens, opts.localTokens);
  const chunk = fwd.maxBatchTokens;
  const mass = new AttentionMassKernel(gpu);
  const massBytes = chunk * c.numHeads * 4; // (T, heads) f32 per layer
  const align = gpu.caps.minStorageBufferOffsetAlignment;
  const massStride = Math.ceil(massBytes / align) * align;
  const massBuf = gpu.createBuffer('calib.mass', c.numLayers * massStride); // (layers, T, heads) outside-window mass
  // each layer's own attention: its scale (query_pre_attn_scalar, yarn / longrope factors), window and soft-cap
  const mods = c.layerWindows.map((window, li) => ({
    scale: attentionSoftmaxScale(layerRopeConfig(c, li)),
    window,
    softcap: c.attnLogitSoftcap ?? 0,
  }));
  try {
    let done = 0;
    await forEachWindowChunk(engine, [ids], opts.windowTokens, async (batch, T) => {
      const positions = batch.positions;
      fwd.encode(batch, (pass, arena, li, b) =>
        mass.encode(pass, arena, {
          q: b.q,
          kCache: b.kCache,
          blockTable: b.blockTable,
          tokenSeq: b.tokenSeq,
          positions: b.positions,
          mass: { buffer: massBuf, offset: li * massStride, size: massBytes },
          T: b.T,
          numHeads: c.numHeads,
          numKvHeads: c.numKvHeads,
          headDim: c.headDim,
          pageSize,
          maxPagesPerSeq: fwd.maxPagesPerSeq,
          ...mods[li],
          sinkTokens: opts.sinkTokens,
          localTokens: opts.localTokens,
        }),
      );
      if (positions[T - 1] >= opts.sinkTokens + opts.localTokens) {
        const all = await gpu.readF32(massBuf, (c.numLayers * massStride) / 4);
        for (let li = 0; li < c.numLayers; li++) {
          acc.add(li, all.subarray((li * massStride) / 4, (li * massStride) / 4 + T * c.numHeads), positions);
        }
      } else {
        await gpu.sync();
      }
      done += T;
      opts.onProgress?.(done, ids.length);
    });
    return acc;
  } finally {
    massBuf.destroy();
  }
}
