/**
 * The importance matrix of calibrated 4-bit quantization (`sift imatrix`, `--quantize-imatrix FILE`): for every
 * linear layer, the mean of x[c]^2 over the calibration tokens at each input channel c of the activations x entering
 * it (llama.cpp's imatrix statistic). util/quant-weighted.ts weighs each weight's rounding error by its column's value.
 *
 * Collected on the engine's own forward pass (model/activation-pass.ts) with one column_sumsq dispatch at each linear
 * layer's input: q/k/v share the attention norm's output, gate/up the MLP norm's. Sums accumulate in f64 on the host
 * after every chunk. GPTQ's full X^T X per input is model/gram.ts.
 *
 * File: a safetensors file with one f32 tensor (cols) per weight matrix, named as the checkpoint names it
 * (model.layers.0.self_attn.q_proj.weight, ..., lm_head.weight or, tied, model.embed_tokens.weight), holding the mean
 * x^2 of its input; metadata: format "sift-imatrix", version, model, tokens, text. q, k and v hold the same vector,
 * as do gate and up. A checkpoint's uploads check it against their matrices (imatrixForCheckpoint).
 */
import { renameSync } from 'node:fs';
import type { Checkpoint } from '../checkpoint/checkpoint.js';
import { SafetensorsFile, writeSafetensors } from '../checkpoint/safetensors.js';
import { SiftError } from '../config/errors.js';
import { ColumnSumSqKernel } from '../shaders/column_sumsq.js';
import { decodeToF32 } from '../util/dtype.js';
import { activationSlots, runActivationPass } from './activation-pass.js';
import type { ActivationPoint } from './forward.js';
import type { ModelRunner } from './runner.js';

export const IMATRIX_FORMAT = 'sift-imatrix';
export const IMATRIX_VERSION = '1';

/** Tensor names of the weight matrices that read the input at `point` of layer `layer`. */
export function imatrixTensorNames(point: ActivationPoint, layer: number, lmHeadName: string): string[] {
  const p = `model.layers.${layer}.`;
  switch (point) {
    case 'qkv':
      return ['q_proj', 'k_proj', 'v_proj'].map((n) => `${p}self_attn.${n}.weight`);
    case 'o':
      return [`${p}self_attn.o_proj.weight`];
    case 'gate-up':
      return [`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`];
    case 'down':
      return [`${p}mlp.down_proj.weight`];
    case 'lm-head':
      return [lmHeadName];
  }
}

/** Per tensor: mean x^2 per input column over the calibration tokens. */
export interface Imatrix {
  /** Tensor name -> (cols) mean of x[c]^2. */
  values: Map<string, Float32Array>;
  /** Calibration tokens the means are over. */
  tokens: number;
  metadata: Record<string, string>;
}

export interface ImatrixOptions {
  /** Tokens per window (a fresh sequence each); at most the engine's context. */
  windowTokens: number;
  /** The checkpoint's lm_head tensor name (the embedding's when tied). */
  lmHeadName: string;
  onProgress?: (tokensDone: number, tokensTotal: number) => void;
}

/**
 * Runs the engine's forward pass densely over the documents `docs` (token ids; each a fresh sequence, cut into
 * windows of windowTokens) and returns each linear layer's mean x^2 per input channel. The
 * engine must hold its weights in their original head order (no head pattern).
 */
export async function collectImatrix(
  engine: ModelRunner,
  docs: readonly (readonly number[])[],
  opts: ImatrixOptions,
): Promise<Imatrix> {
  const gpu = engine.gpu;
  // one slot per (point, layer) in one buffer, each at an aligned offset
  const align = gpu.caps.minStorageBufferOffsetAlignment;
  let bytes = 0;
  const points = activationSlots(engine.config).map((p) => {
    const offset = bytes;
    bytes += Math.ceil((p.cols * 4) / align) * align;
    return { ...p, offset };
  });
  const slotOf = new Map(points.map((p) => [`${p.point}:${p.layer}`, p]));
  const sums = points.map((p) => new Float64Array(p.cols));
  const buf = gpu.createBuffer('imatrix.sums', bytes); // per slot (cols) f32 sums of x^2 of the last chunk
  const kernel = new ColumnSumSqKernel(gpu);
  let total: number;
  try {
    total = await runActivationPass(
      engine,
      docs,
      (pass, arena, point, layer, x, rows, cols) => {
        const p = slotOf.get(`${point}:${layer}`);
        if (!p || p.cols !== cols) throw new SiftError('INTERNAL', `imatrix: no slot for ${point} ${layer} (${cols})`);
        kernel.encode(pass, arena, { x, out: { buffer: buf, offset: p.offset, size: cols * 4 }, rows, n: cols });
      },
      {
        windowTokens: opts.windowTokens,
        onProgress: opts.onProgress,
        afterChunk: async () => {
          const got = await gpu.readF32(buf, bytes / 4);
          points.forEach((p, i) => {
            const at = p.offset / 4;
            for (let k = 0; k < p.cols; k++) sums[i][k] += got[at + k];
          });
        },
      },
    );
  } finally {
    buf.destroy();
  }
  const values = new Map<string, Float32Array>();
  points.forEach((p, i) => {
    const mean = Float32Array.from(sums[i], (v) => v / total);
    for (const name of imatrixTensorNames(p.point, p.layer, opts.lmHeadName)) values.set(name, mean);
  });
  return { values, tokens: total, metadata: {} };
}

/** Writes the importance matrix atomically (a safetensors file, see the file comment). */
export function writeImatrix(file: string, m: Imatrix, metadata: Record<string, string>): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const tensors = [...m.values].map(([name, v]) => ({
    name,
    dtype: 'f32' as const,
    shape: [v.length],
    data: new Uint8Array(v.buffer, v.byteOffset, v.byteLength),
  }));
  writeSafetensors(tmp, tensors, {
    ...metadata,
    format: IMATRIX_FORMAT,
    version: IMATRIX_VERSION,
    tokens: String(m.tokens),
  });
  renameSync(tmp, file);
}

const bad = (msg: string) => new SiftError('INVALID_ARGUMENT', msg, { param: 'quantizeImatrix' });

/** Reads an importance-matrix file; errors name the file and, where one is at fault, the tensor. */
export function readImatrix(file: string): Imatrix {
  let f: SafetensorsFile;
  try {
    f = SafetensorsFile.open(file);
  } catch (e) {
    throw bad(`importance matrix ${file}: ${(e as Error).message} (write one with \`sift imatrix\`)`);
  }
  try {
    if (f.metadata.format !== IMATRIX_FORMAT) {
      throw bad(
        `importance matrix ${file}: not a ${IMATRIX_FORMAT} file (metadata format is ${JSON.stringify(f.metadata.format ?? null)}; write one with \`sift imatrix\`)`,
      );
    }
    if (f.metadata.version !== IMATRIX_VERSION) {
      throw bad(`importance matrix ${file}: version ${f.metadata.version}, this sift reads ${IMATRIX_VERSION}`);
    }
    const tokens = Number(f.metadata.tokens);
    const values = new Map<string, Float32Array>();
    for (const name of f.entries.keys()) {
      const info = f.info(name);
      if (info.dtype !== 'f32' || info.shape.length !== 1) {
        throw bad(`importance matrix ${file}: tensor ${name} is ${info.dtype} [${info.shape}], expected f32 [cols]`);
      }
      const v = decodeToF32(f.read(name), 'f32');
      const i = v.findIndex((x) => !(Number.isFinite(x) && x >= 0));
      if (i >= 0)
        throw bad(`importance matrix ${file}: tensor ${name} holds ${v[i]} at ${i}; importances are finite and >= 0`);
      values.set(name, v);
    }
    return { values, tokens, metadata: { ...f.metadata } };
  } finally {
    f.close();
  }
}

/**
 * Checks an importance matrix against the matrices a q4 upload will quantize (name -> cols): every one present with
 * its column count, and no tensor the model does not have. Errors name the tensor.
 */
export function checkImatrix(m: Imatrix, file: string, matrices: ReadonlyMap<string, number>, model: string): void {
  for (const name of m.values.keys()) {
    if (!matrices.has(name)) {
      throw bad(
        `importance matrix ${file}: tensor ${name} is not a quantized matrix of ${model} (a file for another model?)`,
      );
    }
  }
  for (const [name, cols] of matrices) {
    const v = m.values.get(name);
    if (!v) throw bad(`importance matrix ${file}: no entry for tensor ${name} of ${model} (a file for another model?)`);
    if (v.length !== cols) {
      throw bad(
        `importance matrix ${file}: tensor ${name} has ${v.length} values, ${model}'s matrix has ${cols} columns`,
      );
    }
  }
}

/** The matrices of a checkpoint an importance matrix covers: name -> columns (every linear layer and lm_head). */
export function imatrixMatrices(ckpt: Checkpoint): Map<string, number> {
  const out = new Map<string, number>();
  const add = (name: string) => out.set(name, ckpt.info(name).shape[1]);
  for (let li = 0; li < ckpt.config.numLayers; li++) {
    for (const point of ['qkv', 'o', 'gate-up', 'down'] as const) {
      for (const name of imatrixTensorNames(point, li, ckpt.lmHeadName)) add(name);
    }
  }
  add(ckpt.lmHeadName);
  return out;
}

/** Reads `file` and checks it against the checkpoint (errors name the tensor); returns tensor name -> importances. */
export function imatrixForCheckpoint(file: string, ckpt: Checkpoint): Map<string, Float32Array> {
  const m = readImatrix(file);
  checkImatrix(m, file, imatrixMatrices(ckpt), ckpt.dir);
  return m.values;
}
