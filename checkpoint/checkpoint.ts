/**
 * An HF checkpoint directory opened on the host: config parsed, every expected tensor checked for presence, dtype
 * and shape before anything is read, tied embeddings resolved. Tensor bytes are read on demand, one at a time.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SiftError } from '../config/errors.js';
import { decodeToF32, type WeightDType } from '../util/dtype.js';
import type { QuantFormat, QuantizedMatrix } from '../util/quant.js';
import { loadModelConfig, type ModelConfig } from './config.js';
import { splitFusedTensors } from './fused.js';
import { textModelTensors } from './gemma.js';
import { ggufTensorName } from './gguf-config.js';
import { ggufCheckpoint, readLink } from './gguf-import.js';
import { openSafetensorsDir } from './safetensors.js';

export const EMBED_NAME = 'model.embed_tokens.weight';
export const LM_HEAD_NAME = 'lm_head.weight';

/** One tensor the model needs, with the shape HF stores it in (linear weights are (out, in)). */
export interface TensorSpec {
  name: string;
  shape: readonly number[];
}

/**
 * HF tensor names of one decoder layer. post_attention_layernorm is the MLP's input norm in the Llama family; with
 * Gemma's sandwich norms it normalizes the attention output and pre_feedforward_layernorm feeds the MLP.
 */
export function layerTensorNames(i: number) {
  const p = `model.layers.${i}`;
  return {
    inputNorm: `${p}.input_layernorm.weight`,
    q: `${p}.self_attn.q_proj.weight`,
    k: `${p}.self_attn.k_proj.weight`,
    v: `${p}.self_attn.v_proj.weight`,
    qBias: `${p}.self_attn.q_proj.bias`,
    kBias: `${p}.self_attn.k_proj.bias`,
    vBias: `${p}.self_attn.v_proj.bias`,
    qNorm: `${p}.self_attn.q_norm.weight`,
    kNorm: `${p}.self_attn.k_norm.weight`,
    o: `${p}.self_attn.o_proj.weight`,
    postNorm: `${p}.post_attention_layernorm.weight`,
    preFfnNorm: `${p}.pre_feedforward_layernorm.weight`,
    postFfnNorm: `${p}.post_feedforward_layernorm.weight`,
    gate: `${p}.mlp.gate_proj.weight`,
    up: `${p}.mlp.up_proj.weight`,
    down: `${p}.mlp.down_proj.weight`,
  };
}

/**
 * Every tensor a checkpoint of `config` must hold, with its shape. lm_head.weight is listed only when the
 * embeddings are not tied (a tied checkpoint may store the shared matrix under either name; see openCheckpoint).
 */
export function checkpointLayout(config: ModelConfig): TensorSpec[] {
  const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim, vocabSize } = config;
  const qDim = numHeads * headDim;
  const kvDim = numKvHeads * headDim;
  const out: TensorSpec[] = [{ name: EMBED_NAME, shape: [vocabSize, h] }];
  for (let i = 0; i < config.numLayers; i++) {
    const n = layerTensorNames(i);
    out.push({ name: n.inputNorm, shape: [h] });
    out.push({ name: n.q, shape: [qDim, h] });
    out.push({ name: n.k, shape: [kvDim, h] });
    out.push({ name: n.v, shape: [kvDim, h] });
    if (config.attentionBias) {
      out.push({ name: n.qBias, shape: [qDim] });
      out.push({ name: n.kBias, shape: [kvDim] });
      out.push({ name: n.vBias, shape: [kvDim] });
    }
    if (config.qkNorm) {
      out.push({ name: n.qNorm, shape: [headDim] });
      out.push({ name: n.kNorm, shape: [headDim] });
    }
    out.push({ name: n.o, shape: [h, qDim] });
    out.push({ name: n.postNorm, shape: [h] });
    if (config.sandwichNorms) {
      out.push({ name: n.preFfnNorm, shape: [h] });
      out.push({ name: n.postFfnNorm, shape: [h] });
    }
    out.push({ name: n.gate, shape: [inter, h] });
    out.push({ name: n.up, shape: [inter, h] });
    out.push({ name: n.down, shape: [h, inter] });
  }
  out.push({ name: 'model.norm.weight', shape: [h] });
  if (!config.tieWordEmbeddings) out.push({ name: LM_HEAD_NAME, shape: [vocabSize, h] });
  return out;
}

/**
 * How a tensor is stored: a dense dtype (read() gives its raw bytes), or one of sift's quantized layouts
 * (checkpoint/quant.ts; readQuantized() gives it), as GGUF's block formats repack into.
 */
export type StoredDType = WeightDType | QuantFormat;

export interface CheckpointTensorInfo {
  dtype: StoredDType;
  shape: readonly number[];
}

export interface Checkpoint {
  readonly dir: string;
  readonly config: ModelConfig;
  /** Every tensor in the weight files (including ones sift ignores, e.g. rotary_emb.inv_freq). */
  readonly tensorNames: readonly string[];
  /** The tensor to use as the token embedding (vocab, hidden): embed_tokens, or lm_head when tied and alone. */
  readonly embeddingName: string;
  /** The tensor to use as the output projection (vocab, hidden): lm_head, or embed_tokens when tied. */
  readonly lmHeadName: string;
  has(name: string): boolean;
  info(name: string): CheckpointTensorInfo;
  /** Raw little-endian bytes of a dense tensor's dtype, read from disk now (INTERNAL for a quantized one). */
  read(name: string): Uint8Array;
  /** A quantized tensor in sift's layout, as a (rows, cols) matrix (INTERNAL for a dense one). */
  readQuantized(name: string): QuantizedMatrix;
  /** The tensor decoded to f32 (a quantized one dequantized exactly as the kernels do). */
  readF32(name: string): Float32Array;
  close(): void;
}

function fmtShape(shape: readonly number[]): string {
  return `(${shape.join(', ')})`;
}

/**
 * Opens an HF directory: config.json (+ generation_config.json), model.safetensors or a sharded index, or the
 * weights of the GGUF file a GGUF model directory points at (checkpoint/gguf-import.ts).
 * Validates every tensor of checkpointLayout (present, loadable dtype, expected shape) before returning.
 */
export function openCheckpoint(dir: string): Checkpoint {
  const abs = path.resolve(dir);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(abs);
  } catch {
    throw new SiftError('MODEL_NOT_FOUND', `model directory ${abs} does not exist`);
  }
  if (!stat.isDirectory()) throw new SiftError('MODEL_NOT_FOUND', `model path ${abs} is not a directory`);
  if (!fs.existsSync(path.join(abs, 'config.json'))) {
    throw new SiftError('CHECKPOINT_INVALID', `${abs}: no config.json (not a Hugging Face model directory)`);
  }
  const config = loadModelConfig(abs);
  if (readLink(abs)) {
    const g = ggufCheckpoint(abs, config);
    try {
      for (const spec of checkpointLayout(config)) {
        if (!g.has(spec.name)) {
          const link = readLink(abs);
          throw new SiftError(
            'CHECKPOINT_INVALID',
            `${link?.file ?? abs}: tensor ${ggufTensorName(spec.name, link?.arch)} missing (sift's ${spec.name})`,
          );
        }
        const info = g.info(spec.name); // throws CHECKPOINT_UNSUPPORTED naming the tensor and its ggml type
        const ok = info.shape.length === spec.shape.length && info.shape.every((d, i) => d === spec.shape[i]);
        if (!ok) {
          throw new SiftError(
            'CHECKPOINT_INVALID',
            `${abs}: tensor ${spec.name} has shape ${fmtShape(info.shape)}, expected ${fmtShape(spec.shape)}`,
          );
        }
      }
      return g;
    } catch (e) {
      g.close();
      throw e;
    }
  }
  const files = openSafetensorsDir(abs);
  try {
    // Phi-3's fused qkv_proj / gate_up_proj are read as the q/k/v and gate/up they hold (checkpoint/fused.ts); a
    // multimodal Gemma 3's text model under its plain names (checkpoint/gemma.ts).
    const st =
      (config.architecture === 'Gemma3ForCausalLM' ? textModelTensors(files) : null) ??
      splitFusedTensors(files, config);
    const where = (name: string) => st.fileOf(name)?.path ?? st.source;
    const missing = (name: string, extra = '') =>
      new SiftError('CHECKPOINT_INVALID', `${st.source}: tensor ${name} missing${extra}`);

    // Tied embeddings: one matrix, stored under either name.
    let embeddingName = EMBED_NAME;
    let lmHeadName = LM_HEAD_NAME;
    if (config.tieWordEmbeddings) {
      if (st.has(EMBED_NAME)) lmHeadName = EMBED_NAME;
      else if (st.has(LM_HEAD_NAME)) embeddingName = LM_HEAD_NAME;
      else throw missing(EMBED_NAME, ` (tie_word_embeddings is true; neither it nor ${LM_HEAD_NAME} is present)`);
    } else if (!st.has(LM_HEAD_NAME) && st.has(EMBED_NAME)) {
      throw missing(LM_HEAD_NAME, ' (tie_word_embeddings is false)');
    }

    const layout = checkpointLayout(config).map((t) =>
      t.name === EMBED_NAME ? { name: embeddingName, shape: t.shape } : t,
    );
    for (const spec of layout) {
      if (!st.has(spec.name)) {
        const stored = st.storedName(spec.name);
        throw missing(stored, stored === spec.name ? '' : ` (holds ${spec.name})`);
      }
      const info = st.info(spec.name); // throws CHECKPOINT_UNSUPPORTED for other dtypes
      const ok = info.shape.length === spec.shape.length && info.shape.every((d, i) => d === spec.shape[i]);
      if (!ok) {
        throw new SiftError(
          'CHECKPOINT_INVALID',
          `${where(spec.name)}: tensor ${spec.name} has shape ${fmtShape(info.shape)}, expected ${fmtShape(spec.shape)}`,
        );
      }
    }

    const tensorNames = Object.freeze(st.tensorNames);
    return {
      dir: abs,
      config,
      tensorNames,
      embeddingName,
      lmHeadName,
      has: (name) => st.has(name),
      info: (name) => st.info(name),
      read: (name) => st.read(name),
      readQuantized: (name) => {
        throw new SiftError('INTERNAL', `${st.source}: tensor ${name} is ${st.info(name).dtype}, not quantized`);
      },
      readF32: (name) => decodeToF32(st.read(name), st.info(name).dtype),
      close: () => files.close(),
    };
  } catch (e) {
    files.close();
    throw e;
  }
}
