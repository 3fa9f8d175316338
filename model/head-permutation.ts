/**
 * Head order by permutation: at weight upload each layer's KV heads are reordered so that its r_l retrieval heads come
 * first (KV heads [0, r_l)) and its s_l streaming heads after ([r_l, nKv)). Every kernel then sees contiguous head
 * ranges: retrieval attention = query heads [0, r_l * group) over the main pool (r_l KV heads), streaming attention =
 * query heads [r_l * group, nHeads) over the streaming pool (s_l KV heads).
 *
 * The permutation is invisible to the model's function: attention is per head, RoPE treats every head alike, and
 * o_proj sums over heads, so permuting
 *   - the rows of k_proj / v_proj (and their biases) by KV head: new KV head i = old KV head kvOrder[i],
 *   - the rows of q_proj (+ bias) by query head: new query head i = old query head qOrder[i], where query head h
 *     belongs to KV head floor(h / group), so qOrder keeps each KV head's group together and in order,
 *   - the COLUMNS of o_proj by the same qOrder
 * gives the same logits (up to f32 summation order inside o_proj).
 * Pure TS over the raw little-endian tensor bytes (any dtype: rows and head blocks move as whole byte ranges).
 */
import { SiftError } from '../config/errors.js';
import {
  canPermuteColumnBlocks,
  permuteQuantizedColumnBlocks,
  permuteQuantizedRows,
  type QuantizedMatrix,
} from '../util/quant.js';
import { checkHeadPlan, type HeadPlan } from './head-plan.js';

export interface LayerHeadPermutation {
  /** New KV head i is old KV head kvOrder[i]: the layer's retrieval heads, then its streaming heads. */
  kvOrder: number[];
  /** New query head i is old query head qOrder[i] (groups of `group` heads follow kvOrder). */
  qOrder: number[];
}

export interface HeadShape {
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
}

/** Per layer permutations for `plan` (retrieval heads first, each part in the plan's order). */
export function headPermutation(plan: HeadPlan, shape: HeadShape): LayerHeadPermutation[] {
  checkHeadPlan(plan, shape);
  const group = shape.numHeads / shape.numKvHeads;
  if (!Number.isInteger(group)) {
    throw new SiftError(
      'CHECKPOINT_INVALID',
      `numHeads ${shape.numHeads} is not a multiple of numKvHeads ${shape.numKvHeads}`,
    );
  }
  return plan.retrieval.map((r, l) => {
    const kvOrder = [...r, ...plan.streaming[l]];
    const qOrder = kvOrder.flatMap((kv) => Array.from({ length: group }, (_, g) => kv * group + g));
    return { kvOrder, qOrder };
  });
}

/** Whether a permutation leaves every head in place. */
export function isIdentityPermutation(perm: LayerHeadPermutation[]): boolean {
  return perm.every((p) => p.kvOrder.every((h, i) => h === i));
}

/** (numBlocks * blockBytes) bytes -> block i of the result = block order[i] of `data` (rows grouped by head). */
export function permuteRowBlocks(data: Uint8Array, order: readonly number[]): Uint8Array {
  if (data.byteLength % order.length !== 0) {
    throw new SiftError(
      'INTERNAL',
      `permuteRowBlocks: ${data.byteLength} bytes do not split into ${order.length} blocks`,
    );
  }
  const bb = data.byteLength / order.length;
  const out = new Uint8Array(data.byteLength);
  order.forEach((src, i) => {
    out.set(data.subarray(src * bb, (src + 1) * bb), i * bb);
  });
  return out;
}

/** (rows, order.length * blockBytes) bytes -> in every row, column block i of the result = block order[i]. */
export function permuteColumnBlocks(data: Uint8Array, rows: number, order: readonly number[]): Uint8Array {
  if (data.byteLength % (rows * order.length) !== 0) {
    throw new SiftError(
      'INTERNAL',
      `permuteColumnBlocks: ${data.byteLength} bytes are not ${rows} rows of ${order.length} blocks`,
    );
  }
  const rowBytes = data.byteLength / rows;
  const bb = rowBytes / order.length;
  const out = new Uint8Array(data.byteLength);
  for (let r = 0; r < rows; r++) {
    const base = r * rowBytes;
    order.forEach((src, i) => {
      out.set(data.subarray(base + src * bb, base + (src + 1) * bb), base + i * bb);
    });
  }
  return out;
}

/** Which attention tensor of a layer a name is, from its HF name. */
export type AttentionTensorKind = 'q' | 'k' | 'v' | 'o' | 'qBias' | 'kBias' | 'vBias';

const KINDS: [RegExp, AttentionTensorKind][] = [
  [/^model\.layers\.(\d+)\.self_attn\.q_proj\.weight$/, 'q'],
  [/^model\.layers\.(\d+)\.self_attn\.k_proj\.weight$/, 'k'],
  [/^model\.layers\.(\d+)\.self_attn\.v_proj\.weight$/, 'v'],
  [/^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$/, 'o'],
  [/^model\.layers\.(\d+)\.self_attn\.q_proj\.bias$/, 'qBias'],
  [/^model\.layers\.(\d+)\.self_attn\.k_proj\.bias$/, 'kBias'],
  [/^model\.layers\.(\d+)\.self_attn\.v_proj\.bias$/, 'vBias'],
];

/** The layer and kind of an attention tensor name, or null for any other tensor. */
export function attentionTensorKind(name: string): { layer: number; kind: AttentionTensorKind } | null {
  for (const [re, kind] of KINDS) {
    const m = name.match(re);
    if (m) return { layer: Number(m[1]), kind };
  }
  return null;
}

/**
 * Permutes one tensor's bytes for its layer: q/k/v weights and biases by rows (head blocks), o by column blocks.
 * `rows` is the tensor's first dimension (o_proj: hidden). Other tensors come back unchanged.
 */
export function permuteTensor(
  name: string,
  data: Uint8Array,
  rows: number,
  perm: readonly LayerHeadPermutation[],
): Uint8Array {
  const what = attentionTensorKind(name);
  if (!what) return data;
  const p = perm[what.layer];
  if (!p) throw new SiftError('INTERNAL', `head permutation has no layer ${what.layer} (tensor ${name})`);
  switch (what.kind) {
    case 'q':
    case 'qBias':
      return permuteRowBlocks(data, p.qOrder);
    case 'k':
    case 'v':
    case 'kBias':
    case 'vBias':
      return permuteRowBlocks(data, p.kvOrder);
    case 'o':
      return permuteColumnBlocks(data, rows, p.qOrder);
  }
}

/**
 * permuteTensor for a quantized matrix (util/quant.ts): q/k/v rows move by head with their scale groups; o_proj's
 * column blocks (one per query head, headDim wide) move whole when no scale group straddles two heads.
 */
export function permuteQuantizedTensor(
  name: string,
  m: QuantizedMatrix,
  perm: readonly LayerHeadPermutation[],
): QuantizedMatrix {
  const what = attentionTensorKind(name);
  if (!what) return m;
  const p = perm[what.layer];
  if (!p) throw new SiftError('INTERNAL', `head permutation has no layer ${what.layer} (tensor ${name})`);
  const rowsByHead = (order: readonly number[]) => {
    const per = m.rows / order.length;
    return order.flatMap((h) => Array.from({ length: per }, (_, i) => h * per + i));
  };
  switch (what.kind) {
    case 'q':
      return permuteQuantizedRows(m, rowsByHead(p.qOrder));
    case 'k':
    case 'v':
      return permuteQuantizedRows(m, rowsByHead(p.kvOrder));
    case 'o': {
      const headCols = m.cols / p.qOrder.length;
      if (!canPermuteColumnBlocks(m, headCols)) {
        throw new SiftError(
          'CHECKPOINT_UNSUPPORTED',
          `tensor ${name}: scale groups of ${m.group} columns straddle heads of ${headCols}; a head pattern cannot reorder it`,
        );
      }
      return permuteQuantizedColumnBlocks(m, headCols, p.qOrder);
    }
    default:
      throw new SiftError('INTERNAL', `tensor ${name}: a quantized ${what.kind} vector`);
  }
}
