/**
 * Per-input-channel scales for calibrated q4, folded exactly into the op before each matrix (AWQ's idea; sift's
 * search). A linear layer y = W x equals (W diag(s)) (x / s) for any s > 0: the matrix is quantized with its column
 * c multiplied by s[c] and the producer of x divides its channel c by s[c], so channels the activations drive hard
 * (large mean x^2) can be given more of their group's 16 levels. Where the producer is
 *   - an RMSNorm (q/k/v after input_layernorm, gate/up after the MLP's input norm): its weight / s (Gemma's (1 + w)
 *     norms: 1 + w' = (1 + w) / s);
 *   - v_proj (o_proj reads softmax(..) v): v's output row (kv head, d) and its bias / s, o's columns of every query
 *     head of that kv head * s (one s per kv channel, shared by the GQA group);
 *   - up_proj (down reads silu(gate) * up, GeGLU likewise): up's row i / s[i], down's column i * s[i],
 * the model computes the same function (in exact arithmetic); lm_head has no such producer of its own (the final norm
 * of a tied embedding is shared with nothing, but the embedding itself is: it is left unscaled).
 *
 * s[c] = a[c]^(alpha / 2) (a = the importance matrix's mean x^2, floored at 1e-6 of its max; normalized to a geometric
 * mean of 1), alpha searched per layer and point over ALPHAS: each candidate quantizes a sample of the point's q4
 * matrices (up to SAMPLE_ROWS evenly spaced rows) weighted by the importances the scaled input has (a / s^2), and
 * scores the importance-weighted error sum_c a[c] (w[c] - dequant(w s)[c] / s[c])^2 in the original space. alpha = 0
 * (no scaling) is a candidate, so a point is scaled only where that error falls.
 */
import type { Checkpoint } from '../checkpoint/checkpoint.js';
import { SiftError } from '../config/errors.js';
import { dequantize } from '../util/quant.js';
import { quantizeQ4Weighted } from '../util/quant-weighted.js';

const ALPHAS = [0, 0.25, 0.5, 0.75, 1];
const SAMPLE_ROWS = 96;
const FLOOR = 1e-6;

/** One layer's channel scales (null: that point is not scaled). */
export interface LayerScales {
  /** (hidden) q/k/v input, folded into input_layernorm. */
  attn: Float32Array | null;
  /** (kvHeads * headDim) o_proj input per kv channel, folded into v_proj's rows. */
  o: Float32Array | null;
  /** (hidden) gate/up input, folded into the MLP's input norm. */
  mlp: Float32Array | null;
  /** (intermediate) down_proj input, folded into up_proj's rows. */
  down: Float32Array | null;
  /** The alpha chosen at each point (0 where not scaled). */
  alpha: { attn: number; o: number; mlp: number; down: number };
}

interface Search {
  group: number;
  importance: ReadonlyMap<string, Float32Array>;
  /** Matrices that stay at int8 (not scored: q4 only). */
  int8: ReadonlySet<string>;
}

/** Scales of input channels from importances a: a^(alpha/2), floored, geometric mean 1. */
function scalesOf(a: Float32Array, alpha: number): Float32Array {
  let max = 0;
  for (const v of a) max = Math.max(max, v);
  const floor = max * FLOOR;
  const s = Float32Array.from(a, (v) => Math.max(v, floor) ** (alpha / 2));
  let logSum = 0;
  for (const v of s) logSum += Math.log(v);
  const g = Math.exp(logSum / s.length);
  for (let i = 0; i < s.length; i++) s[i] = s[i] / g;
  return s;
}

/** The error of quantizing `w`'s sampled rows with columns scaled by s (see the file comment). */
function scaledError(w: Float32Array, rows: number, cols: number, a: Float32Array, s: Float32Array, o: Search): number {
  const step = Math.max(1, Math.floor(rows / SAMPLE_ROWS));
  const n = Math.ceil(rows / step);
  const ws = new Float32Array(n * cols);
  const as = Float32Array.from(a, (v, c) => v / (s[c] * s[c]));
  for (let i = 0; i < n; i++) for (let c = 0; c < cols; c++) ws[i * cols + c] = w[i * step * cols + c] * s[c];
  const d = dequantize(quantizeQ4Weighted(ws, n, cols, o.group, as));
  let e = 0;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < cols; c++) e += a[c] * (d[i * cols + c] / s[c] - w[i * step * cols + c]) ** 2;
  }
  return e;
}

/**
 * The alpha (in ALPHAS) whose scales give the lowest error over `matrices` (name -> its f32 weights, columns scaled by
 * expand(s)); a = the importances of the point's channels (expanded to each matrix's columns by `expand`).
 */
function bestAlpha(
  ckpt: Checkpoint,
  names: string[],
  a: Float32Array,
  expand: (s: Float32Array) => Float32Array,
  o: Search,
): { alpha: number; s: Float32Array | null } {
  const scored = names.filter((n) => !o.int8.has(n));
  if (scored.length === 0) return { alpha: 0, s: null };
  const ws = scored.map((n) => ({ n, w: ckpt.readF32(n), shape: ckpt.info(n).shape }));
  const aCols = expand(a);
  let best = { alpha: 0, s: null as Float32Array | null, e: Number.POSITIVE_INFINITY };
  for (const alpha of ALPHAS) {
    const s = scalesOf(a, alpha);
    const sc = expand(s);
    let e = 0;
    for (const m of ws) e += scaledError(m.w, m.shape[0], m.shape[1], aCols, sc, o);
    if (e < best.e) best = { alpha, s: alpha === 0 ? null : s, e };
  }
  return best;
}

/** Whether every named tensor is a float (F32/F16/BF16) tensor the fold can rewrite. */
function allFloat(ckpt: Checkpoint, names: string[]): boolean {
  return names.every((n) => ckpt.has(n) && !['q8', 'q4'].includes(ckpt.info(n).dtype));
}

const mlpNormName = (ckpt: Checkpoint, li: number) =>
  `model.layers.${li}.${ckpt.config.sandwichNorms ? 'pre_feedforward' : 'post_attention'}_layernorm.weight`;

/** Searches every layer's channel scales (see the file comment). */
export function searchChannelScales(ckpt: Checkpoint, o: Search): LayerScales[] {
  const c = ckpt.config;
  const hd = c.headDim;
  const group = c.numHeads / c.numKvHeads;
  const imp = (name: string) => {
    const v = o.importance.get(name);
    if (!v) throw new SiftError('INVALID_ARGUMENT', `importance matrix: no entry for tensor ${name}`);
    return v;
  };
  const same = (s: Float32Array) => s;
  /** kv-channel values -> o_proj columns (every query head of the kv head). */
  const toHeads = (s: Float32Array) =>
    Float32Array.from({ length: c.numHeads * hd }, (_, j) => s[Math.floor(Math.floor(j / hd) / group) * hd + (j % hd)]);
  return Array.from({ length: c.numLayers }, (_, li) => {
    const p = `model.layers.${li}.`;
    const [q, k, v] = ['q', 'k', 'v'].map((x) => `${p}self_attn.${x}_proj.weight`);
    const oName = `${p}self_attn.o_proj.weight`;
    const [gate, up, down] = ['gate', 'up', 'down'].map((x) => `${p}mlp.${x}_proj.weight`);
    const attn = allFloat(ckpt, [q, k, v]) ? bestAlpha(ckpt, [q, k, v], imp(q), same, o) : { alpha: 0, s: null };
    // o's importances per kv channel: the mean over the query heads that read it
    const aO = imp(oName);
    const aKv = Float32Array.from({ length: c.numKvHeads * hd }, (_, i) => {
      const kvh = Math.floor(i / hd);
      let sum = 0;
      for (let g = 0; g < group; g++) sum += aO[(kvh * group + g) * hd + (i % hd)];
      return sum / group;
    });
    const oS = allFloat(ckpt, [v, oName]) ? bestAlpha(ckpt, [oName], aKv, toHeads, o) : { alpha: 0, s: null };
    const mlp = allFloat(ckpt, [gate, up]) ? bestAlpha(ckpt, [gate, up], imp(gate), same, o) : { alpha: 0, s: null };
    const dn = allFloat(ckpt, [up, down]) ? bestAlpha(ckpt, [down], imp(down), same, o) : { alpha: 0, s: null };
    return {
      attn: attn.s,
      o: oS.s,
      mlp: mlp.s,
      down: dn.s,
      alpha: { attn: attn.alpha, o: oS.alpha, mlp: mlp.alpha, down: dn.alpha },
    };
  });
}

/** What the fold does to one tensor: columns times, rows divided by, or a norm divided by a vector. */
interface TensorScaling {
  cols?: Float32Array;
  rows?: Float32Array;
  /** A 1-D tensor (norm weight or bias) divided elementwise; `unitOffset`: Gemma's (1 + w) norm. */
  div?: Float32Array;
  unitOffset?: boolean;
}

/** Tensor name -> how the fold rewrites it. */
function scalingPlan(ckpt: Checkpoint, scales: LayerScales[]): Map<string, TensorScaling> {
  const c = ckpt.config;
  const hd = c.headDim;
  const group = c.numHeads / c.numKvHeads;
  const plan = new Map<string, TensorScaling>();
  const add = (name: string, t: TensorScaling) => plan.set(name, { ...plan.get(name), ...t });
  scales.forEach((s, li) => {
    const p = `model.layers.${li}.`;
    if (s.attn) {
      for (const x of ['q', 'k', 'v']) add(`${p}self_attn.${x}_proj.weight`, { cols: s.attn });
      add(`${p}input_layernorm.weight`, { div: s.attn, unitOffset: c.normUnitOffset });
    }
    if (s.o) {
      const so = s.o;
      add(`${p}self_attn.v_proj.weight`, { rows: so });
      if (c.attentionBias) add(`${p}self_attn.v_proj.bias`, { div: so });
      const cols = Float32Array.from(
        { length: c.numHeads * hd },
        (_, j) => so[Math.floor(Math.floor(j / hd) / group) * hd + (j % hd)],
      );
      add(`${p}self_attn.o_proj.weight`, { cols });
    }
    if (s.mlp) {
      for (const x of ['gate', 'up']) add(`${p}mlp.${x}_proj.weight`, { cols: s.mlp });
      add(mlpNormName(ckpt, li), { div: s.mlp, unitOffset: c.normUnitOffset });
    }
    if (s.down) {
      add(`${p}mlp.up_proj.weight`, { rows: s.down });
      add(`${p}mlp.down_proj.weight`, { cols: s.down });
    }
  });
  return plan;
}

/**
 * The checkpoint with the scales folded in (readF32 of the rewritten tensors returns them scaled; everything else is
 * the checkpoint's own), and the importances of the scaled inputs (a / s^2) for the weighted quantizer.
 */
export function foldChannelScales(
  ckpt: Checkpoint,
  scales: LayerScales[],
  importance: ReadonlyMap<string, Float32Array>,
): { ckpt: Checkpoint; importance: Map<string, Float32Array> } {
  const plan = scalingPlan(ckpt, scales);
  const view: Checkpoint = Object.create(ckpt);
  view.readF32 = (name: string): Float32Array => {
    const f = ckpt.readF32(name);
    const t = plan.get(name);
    if (!t) return f;
    if (t.div) {
      for (let i = 0; i < f.length; i++) f[i] = t.unitOffset ? (1 + f[i]) / t.div[i] - 1 : f[i] / t.div[i];
      return f;
    }
    const [rows, cols] = ckpt.info(name).shape;
    for (let r = 0; r < rows; r++) {
      const rs = t.rows ? 1 / t.rows[r] : 1;
      for (let col = 0; col < cols; col++) f[r * cols + col] *= (t.cols ? t.cols[col] : 1) * rs;
    }
    return f;
  };
  view.read = (name: string): Uint8Array => {
    if (plan.has(name)) throw new SiftError('INTERNAL', `tensor ${name} is rescaled: read it with readF32`);
    return ckpt.read(name);
  };
  const imp = new Map(importance);
  for (const [name, t] of plan) {
    const a = importance.get(name);
    if (a && t.cols)
      imp.set(
        name,
        Float32Array.from(a, (v, i) => v / (t.cols as Float32Array)[i] ** 2),
      );
  }
  return { ckpt: view, importance: imp };
}
