/**
 * Weight memory of a model in each format sift runs, by arithmetic over its shape: the same layouts the GPU upload
 * uses (shaders/tensor.ts, util/quant.ts), so `sift kv` can size an 8B model without loading one.
 *   f32 / bf16: 4 / 2 bytes per weight
 *   int8 (--quantize int8): 1 byte per weight + an f32 scale per output row
 *   q4 (--quantize q4, group g): half a byte per weight + an f16 scale and min per group
 *   q4g64+int8 v,down (--quantize q4's default): q4g64 with every v_proj and down_proj at int8
 *   GGUF Q8_0: repacked as int8 + an f16 scale per 32 (8.5 bits, as in the file)
 *   GGUF Q4_K: repacked as u4 + an f32 scale and min per 32 (6 bits; 4.5 in the file)
 *   GGUF Q6_K: repacked as int8 + an f32 scale per 16 (10 bits; 6.56 in the file)
 * Norm weights and biases are f32 in every format.
 */
import type { ModelConfig } from './config.js';

export const WEIGHT_FORMATS = [
  'f32',
  'bf16',
  'int8',
  'q4g32',
  'q4g128',
  'q4g64+int8 v,down',
  'Q8_0',
  'Q4_K',
  'Q6_K',
] as const;
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];

/** Bits per weight the GGUF file itself spends on each ggml type (for comparison with the repacked layout). */
export const GGUF_FILE_BITS: Readonly<Partial<Record<WeightFormat, number>>> = { Q8_0: 8.5, Q4_K: 4.5, Q6_K: 6.5625 };

const ceil8 = (n: number) => Math.ceil(n / 8) * 8;

/** GPU bytes of one (rows, cols) matrix in `format` (`int8Role`: a v_proj or down_proj, int8 in the q4 mix). */
export function matrixBytes(format: WeightFormat, rows: number, cols: number, int8Role = false): number {
  switch (format) {
    case 'q4g64+int8 v,down':
      return int8Role ? matrixBytes('int8', rows, cols) : (rows * ceil8(cols)) / 2 + rows * Math.ceil(cols / 64) * 4;
    case 'f32':
      return rows * cols * 4;
    case 'bf16':
      return rows * cols * 2;
    case 'int8':
      return rows * ceil8(cols) + rows * 4;
    case 'q4g32':
    case 'q4g128': {
      const g = format === 'q4g32' ? 32 : 128;
      return (rows * ceil8(cols)) / 2 + rows * Math.ceil(cols / g) * 4;
    }
    case 'Q8_0':
      return rows * ceil8(cols) + rows * Math.ceil(cols / 32) * 2;
    case 'Q4_K':
      return (rows * ceil8(cols)) / 2 + rows * Math.ceil(cols / 32) * 8;
    case 'Q6_K':
      return rows * ceil8(cols) + rows * Math.ceil(cols / 16) * 4;
  }
}

export type WeightShape = Pick<
  ModelConfig,
  | 'hiddenSize'
  | 'intermediateSize'
  | 'numLayers'
  | 'numHeads'
  | 'numKvHeads'
  | 'headDim'
  | 'vocabSize'
  | 'tieWordEmbeddings'
  | 'attentionBias'
>;

export interface WeightBytes {
  /** Everything on the GPU. */
  total: number;
  /** Read by one decode step: layers, final norm, lm_head, one embedding row. */
  perDecodeStep: number;
}

export function modelWeightBytes(c: WeightShape, format: WeightFormat): WeightBytes {
  const h = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const m = (r: number, k: number, int8Role = false) => matrixBytes(format, r, k, int8Role);
  const layer =
    m(q, h) +
    m(kv, h) +
    m(kv, h, true) +
    m(h, q) +
    2 * m(c.intermediateSize, h) +
    m(h, c.intermediateSize, true) +
    2 * h * 4 +
    (c.attentionBias ? (q + 2 * kv) * 4 : 0);
  const embed = m(c.vocabSize, h);
  const lmHead = c.tieWordEmbeddings ? 0 : m(c.vocabSize, h);
  const total = c.numLayers * layer + embed + lmHead + h * 4;
  const perDecodeStep =
    c.numLayers * layer + h * 4 + (c.tieWordEmbeddings ? embed : lmHead) + Math.ceil(embed / c.vocabSize);
  return { total, perDecodeStep };
}
