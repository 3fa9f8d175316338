/**
 * Token sampling on the device (shaders/sample.wgsl): logits (R, V) f32 and one spec per row -> tokens (R) u32,
 * one workgroup per row. The rule is SampleSpec's (model/executor.ts), the same as engine/sampler.ts sampleLogits
 * on the host: greedy, temperature, top-k, top-p, a sparse additive logit bias, the step's uniform draw. A greedy
 * step reads back 4 bytes per sequence instead of its logits row.
 *
 * Specs are (R, 8) u32 words (`packRowSpecs`): temperature f32, topK, topP f32, u f32, bias offset, bias count,
 * enabled (0: leave the row to the host), 0. Bias entries are (token id, f32 bits of the delta) u32 pairs.
 */
import { SiftError } from '../config/errors.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 64;

/** struct Params of sample.wgsl. */
const PARAMS = defineParams('sample', { rows: 'u32', vocab: 'u32' });

/** Words of one row's spec. */
export const SAMPLE_SPEC_WORDS = 8;

/** A row's sampling as the kernel takes it (structurally model/executor.ts SampleSpec). */
export interface RowSampling {
  temperature: number;
  topK: number;
  topP: number;
  u: number;
  bias?: { ids: ArrayLike<number>; deltas: ArrayLike<number> };
}

/**
 * Writes the specs of `rows` (null: the host samples that row) into `specs` (R * 8 words) and their bias entries
 * into `bias` (pairs of words, from word 0); returns the bias words used. Throws when `bias` is too small.
 */
export function packRowSpecs(rows: readonly (RowSampling | null)[], specs: Uint32Array, bias: Uint32Array): number {
  const f = new Float32Array(specs.buffer, specs.byteOffset, specs.length);
  const fb = new Float32Array(bias.buffer, bias.byteOffset, bias.length);
  let used = 0;
  rows.forEach((r, i) => {
    const o = i * SAMPLE_SPEC_WORDS;
    if (!r) {
      specs.fill(0, o, o + SAMPLE_SPEC_WORDS);
      return;
    }
    const n = r.bias?.ids.length ?? 0;
    if (used + 2 * n > bias.length) {
      throw new SiftError('INTERNAL', `sample: ${used / 2 + n} bias entries exceed the ${bias.length / 2} reserved`);
    }
    f[o] = r.temperature;
    specs[o + 1] = r.topK;
    f[o + 2] = r.topP;
    // f32 rounding must not lift a draw below 1 to 1
    f[o + 3] = Math.min(r.u, 0.99999994);
    specs[o + 4] = used / 2;
    specs[o + 5] = n;
    specs[o + 6] = 1;
    specs[o + 7] = 0;
    for (let j = 0; j < n; j++) {
      bias[used + 2 * j] = r.bias!.ids[j];
      fb[used + 2 * j + 1] = r.bias!.deltas[j];
    }
    used += 2 * n;
  });
  return used;
}

export interface SampleArgs {
  logits: Binding; // (R, V) f32
  specs: Binding; // (R, 8) u32 (packRowSpecs)
  bias: Binding; // (entries, 2) u32 (packRowSpecs); any non-empty binding when no row has a bias
  tokens: Binding; // (R) u32, written for the enabled rows
  keys: Binding; // scratch (R, V) u32
  weights: Binding; // scratch (R, V) f32
  rows: number; // R
  vocab: number; // V
}

/** Bytes of each scratch buffer for R rows of a V vocabulary. */
export function sampleScratchBytes(rows: number, vocab: number): number {
  return rows * vocab * 4;
}

export class SampleKernel {
  private readonly pipeline: GPUComputePipeline;
  constructor(private readonly gpu: Gpu) {
    this.pipeline = gpu.pipeline('sample', { WG }, {}, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: SampleArgs): void {
    if (
      !Number.isInteger(a.rows) ||
      a.rows < 0 ||
      !Number.isInteger(a.vocab) ||
      a.vocab < 1 ||
      a.rows * a.vocab >= 2 ** 32
    ) {
      throw new SiftError('INTERNAL', `sample: bad shape rows=${a.rows} vocab=${a.vocab}`);
    }
    if (a.rows === 0) return;
    const u = arena.params(PARAMS, { rows: a.rows, vocab: a.vocab });
    this.gpu.dispatch(pass, this.pipeline, [a.logits, a.specs, a.bias, a.tokens, a.keys, a.weights, u], a.rows);
  }
}
