/**
 * GPTQ's calibration statistic (`sift imatrix --full`, `--quantize-gptq FILE`): for every distinct linear-layer input,
 * the Gram matrix mean over the calibration tokens of x x^T (cols, cols), which is the layer's Hessian H = 2 X^T X up
 * to a scale (util/quant-gptq.ts). Its diagonal is the importance matrix (model/imatrix.ts); the off-diagonal terms,
 * which the imatrix drops, are what lets GPTQ undo one column's rounding error with the columns its input correlates
 * with.
 *
 * Collected on the calibration pass (model/activation-pass.ts) with one column_gram dispatch at each input, summing
 * into a GPU buffer per input (f32) over the whole text, read once at the end. The inputs q/k/v share and gate/up
 * share are stored once.
 *
 * File: a safetensors file with one f32 tensor (cols, cols) (full, symmetric) per input, named after the matrices
 * that read it: model.layers.L.self_attn.qkv_proj.input (q/k/v), model.layers.L.self_attn.o_proj.input,
 * model.layers.L.mlp.gate_up_proj.input (gate/up), model.layers.L.mlp.down_proj.input, lm_head.input; metadata:
 * format "sift-gram", version, model, tokens, text. gramForCheckpoint checks it against a checkpoint's matrices and
 * maps each matrix to its input's Gram matrix.
 */
import { renameSync } from 'node:fs';
import type { Checkpoint } from '../checkpoint/checkpoint.js';
import { SafetensorsFile, writeSafetensors } from '../checkpoint/safetensors.js';
import { SiftError } from '../config/errors.js';
import { ColumnGramKernel } from '../shaders/column_gram.js';
import { decodeToF32 } from '../util/dtype.js';
import { activationSlots, runActivationPass } from './activation-pass.js';
import type { ActivationPoint } from './forward.js';
import { imatrixTensorNames } from './imatrix.js';
import type { ModelRunner } from './runner.js';

export const GRAM_FORMAT = 'sift-gram';
export const GRAM_VERSION = '1';

/** The file's tensor name of the input at `point` of layer `layer`. */
export function gramTensorName(point: ActivationPoint, layer: number): string {
  const p = `model.layers.${layer}.`;
  switch (point) {
    case 'qkv':
      return `${p}self_attn.qkv_proj.input`;
    case 'o':
      return `${p}self_attn.o_proj.input`;
    case 'gate-up':
      return `${p}mlp.gate_up_proj.input`;
    case 'down':
      return `${p}mlp.down_proj.input`;
    case 'lm-head':
      return 'lm_head.input';
  }
}

/** Per distinct linear-layer input: mean x x^T over the calibration tokens. */
export interface GramSet {
  /** Input name (gramTensorName) -> (cols, cols) f32, symmetric. */
  values: Map<string, Float32Array>;
  tokens: number;
  metadata: Record<string, string>;
}

/** Runs the calibration pass (model/activation-pass.ts) and returns every linear input's mean x x^T. */
export async function collectGram(
  engine: ModelRunner,
  docs: readonly (readonly number[])[],
  opts: { windowTokens: number; onProgress?: (tokensDone: number, tokensTotal: number) => void },
): Promise<GramSet> {
  const gpu = engine.gpu;
  const slots = activationSlots(engine.config);
  const max = gpu.caps.maxStorageBufferBindingSize;
  for (const s of slots) {
    if (s.cols * s.cols * 4 > max) {
      throw new SiftError(
        'GPU_LIMIT',
        `imatrix --full: the Gram matrix of a ${s.cols}-wide input (${gramTensorName(s.point, s.layer)}) needs ${s.cols * s.cols * 4} bytes, over this adapter's binding limit of ${max}`,
      );
    }
  }
  const bufs = new Map<string, GPUBuffer>();
  const kernel = new ColumnGramKernel(gpu);
  const started = new Set<string>();
  try {
    // (cols, cols) f32 per input: upper triangle summed over the whole text; zeroed at creation
    for (const s of slots) bufs.set(`${s.point}:${s.layer}`, gpu.createBuffer('gram.sums', s.cols * s.cols * 4));
    const tokens = await runActivationPass(
      engine,
      docs,
      (pass, arena, point, layer, x, rows, cols) => {
        const key = `${point}:${layer}`;
        const buf = bufs.get(key);
        const want = slots.find((s) => s.point === point && s.layer === layer)?.cols;
        if (!buf || want !== cols) throw new SiftError('INTERNAL', `gram: no slot for ${point} ${layer} (${cols})`);
        kernel.encode(pass, arena, { x, out: buf, rows, n: cols, accumulate: started.has(key) });
        started.add(key);
      },
      { windowTokens: opts.windowTokens, onProgress: opts.onProgress },
    );
    const values = new Map<string, Float32Array>();
    for (const s of slots) {
      const n = s.cols;
      const got = await gpu.readF32(bufs.get(`${s.point}:${s.layer}`) as GPUBuffer, n * n);
      const g = new Float32Array(n * n);
      for (let i = 0; i < n; i++) {
        for (let j = i; j < n; j++) {
          const v = got[i * n + j] / tokens;
          g[i * n + j] = v;
          g[j * n + i] = v;
        }
      }
      values.set(gramTensorName(s.point, s.layer), g);
    }
    return { values, tokens, metadata: {} };
  } finally {
    for (const b of bufs.values()) b.destroy();
  }
}

/** Writes the Gram matrices atomically (a safetensors file, see the file comment). */
export function writeGram(file: string, m: GramSet, metadata: Record<string, string>): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const tensors = [...m.values].map(([name, v]) => {
    const n = Math.round(Math.sqrt(v.length));
    return { name, dtype: 'f32' as const, shape: [n, n], data: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) };
  });
  writeSafetensors(tmp, tensors, { ...metadata, format: GRAM_FORMAT, version: GRAM_VERSION, tokens: String(m.tokens) });
  renameSync(tmp, file);
}

const bad = (msg: string) => new SiftError('INVALID_ARGUMENT', msg, { param: 'quantizeGptq' });

/** Reads a Gram file; errors name the file and, where one is at fault, the tensor. */
export function readGram(file: string): GramSet {
  let f: SafetensorsFile;
  try {
    f = SafetensorsFile.open(file);
  } catch (e) {
    throw bad(`GPTQ statistics ${file}: ${(e as Error).message} (write them with \`sift imatrix --full\`)`);
  }
  try {
    if (f.metadata.format !== GRAM_FORMAT) {
      const hint =
        f.metadata.format === 'sift-imatrix'
          ? 'an importance matrix holds only the diagonal: write the full one with `sift imatrix --full`'
          : 'write one with `sift imatrix --full`';
      throw bad(
        `GPTQ statistics ${file}: not a ${GRAM_FORMAT} file (metadata format is ${JSON.stringify(f.metadata.format ?? null)}; ${hint})`,
      );
    }
    if (f.metadata.version !== GRAM_VERSION) {
      throw bad(`GPTQ statistics ${file}: version ${f.metadata.version}, this sift reads ${GRAM_VERSION}`);
    }
    const values = new Map<string, Float32Array>();
    for (const name of f.entries.keys()) {
      const info = f.info(name);
      if (info.dtype !== 'f32' || info.shape.length !== 2 || info.shape[0] !== info.shape[1]) {
        throw bad(
          `GPTQ statistics ${file}: tensor ${name} is ${info.dtype} [${info.shape}], expected f32 [cols, cols]`,
        );
      }
      const v = decodeToF32(f.read(name), 'f32');
      const i = v.findIndex((x) => !Number.isFinite(x));
      if (i >= 0) throw bad(`GPTQ statistics ${file}: tensor ${name} holds ${v[i]} at ${i}`);
      values.set(name, v);
    }
    return { values, tokens: Number(f.metadata.tokens), metadata: { ...f.metadata } };
  } finally {
    f.close();
  }
}

/**
 * Reads `file` and checks it against the checkpoint: one (cols, cols) tensor per distinct input of its linear layers
 * and lm_head, nothing else (errors name the file and the tensor). Returns weight matrix name -> its input's Gram
 * matrix (q/k/v share one array, as do gate/up).
 */
export function gramForCheckpoint(file: string, ckpt: Checkpoint): Map<string, Float32Array> {
  const m = readGram(file);
  const model = ckpt.dir;
  const out = new Map<string, Float32Array>();
  const expected = new Set<string>();
  for (const s of activationSlots(ckpt.config)) {
    const input = gramTensorName(s.point, s.layer);
    expected.add(input);
    const g = m.values.get(input);
    if (!g) throw bad(`GPTQ statistics ${file}: no entry for ${input} of ${model} (a file for another model?)`);
    for (const name of imatrixTensorNames(s.point, s.layer, ckpt.lmHeadName)) {
      const cols = ckpt.info(name).shape[1];
      if (g.length !== cols * cols) {
        const n = Math.round(Math.sqrt(g.length));
        throw bad(`GPTQ statistics ${file}: ${input} is [${n}, ${n}], ${model}'s ${name} has ${cols} columns`);
      }
      out.set(name, g);
    }
  }
  for (const name of m.values.keys()) {
    if (!expected.has(name)) {
      throw bad(
        `GPTQ statistics ${file}: tensor ${name} is not a linear-layer input of ${model} (a file for another model?)`,
      );
    }
  }
  return out;
}
