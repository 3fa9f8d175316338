/**
 * Importer: a llama2.c v0 ("legacy") checkpoint + tokenizer.bin -> a Hugging Face Llama directory
 * (config.json, model.safetensors F32, tokenizer.json, tokenizer_config.json, generation_config.json), written
 * atomically with a completion marker (see model-dir.ts).
 *
 * Checkpoint layout (all little-endian):
 *   int32 x 7: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative: unshared classifier), seq_len
 *   f32 token_embedding (vocab, dim)
 *   f32 rms_att (layers, dim)
 *   f32 wq (layers, n_heads*head_size, dim)        rows in interleaved-pair RoPE order
 *   f32 wk (layers, n_kv_heads*head_size, dim)     rows in interleaved-pair RoPE order
 *   f32 wv (layers, n_kv_heads*head_size, dim)
 *   f32 wo (layers, dim, n_heads*head_size)
 *   f32 rms_ffn (layers, dim)
 *   f32 w1 (layers, hidden, dim)   gate
 *   f32 w2 (layers, dim, hidden)   down
 *   f32 w3 (layers, hidden, dim)   up
 *   f32 rms_final (dim,)
 *   f32 freq_cis_real, freq_cis_imag (seq_len, head_size/2) each: skipped (HF recomputes RoPE)
 *   f32 wcls (vocab, dim) only when vocab_size < 0
 * The whole checkpoint is held in memory while importing (fine for the llama2.c-sized models this is for).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SiftError } from '../config/errors.js';
import { buildTokenizerJson, parseLlama2cTokenizer } from './llama2c-tokenizer.js';
import { readMarker, writeModelDirAtomically } from './model-dir.js';
import { KNOWN_MODELS, type KnownModel } from './models.js';
import { type TensorToWrite, writeSafetensors } from './safetensors.js';

export const LLAMA2C_HEADER_BYTES = 28;
/** First int32 of llama2.c's versioned exports (export.py --version 1/2): "ak42". */
const LLAMA2C_MAGIC = 0x616b3432;

/** The llama2.c header, with the classifier sign split out. */
export interface Llama2cConfig {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  /** True when the classifier is the token embedding (vocab_size was positive). */
  sharedClassifier: boolean;
  headSize: number;
}

/** Bytes (or a path to read them from) plus the name errors use. */
export type ByteSource = string | { bytes: Uint8Array; label: string };

function invalid(label: string, what: string): SiftError {
  return new SiftError('CHECKPOINT_INVALID', `${label}: ${what}`);
}

function load(src: ByteSource): { bytes: Uint8Array; label: string } {
  if (typeof src !== 'string') return src;
  try {
    return { bytes: fs.readFileSync(src), label: src };
  } catch (e) {
    throw new SiftError('CHECKPOINT_INVALID', `${src}: cannot read (${(e as Error).message})`, { cause: e });
  }
}

/** Parses and sanity-checks the 28-byte header. */
export function readLlama2cHeader(bytes: Uint8Array, label: string): Llama2cConfig {
  if (bytes.byteLength < LLAMA2C_HEADER_BYTES) {
    throw invalid(label, `${bytes.byteLength} bytes, too short for the ${LLAMA2C_HEADER_BYTES}-byte llama2.c header`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, LLAMA2C_HEADER_BYTES);
  if (dv.getUint32(0, true) === LLAMA2C_MAGIC) {
    throw new SiftError(
      'CHECKPOINT_UNSUPPORTED',
      `${label}: a versioned llama2.c export (version ${dv.getInt32(4, true)}); only the legacy v0 layout is supported (export.py --version 0)`,
    );
  }
  const h = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabRaw, seqLen] = h;
  const names = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'];
  const limits = [1 << 16, 1 << 18, 1024, 1024, 1024, 1 << 22, 1 << 24];
  h.forEach((v, i) => {
    const a = Math.abs(v);
    if (a === 0 || a > limits[i] || (v < 0 && i !== 5)) {
      throw invalid(label, `header field ${names[i]} = ${v} is out of range; not a llama2.c v0 checkpoint?`);
    }
  });
  if (dim % nHeads !== 0) throw invalid(label, `dim ${dim} is not a multiple of n_heads ${nHeads}`);
  if (nHeads % nKvHeads !== 0) throw invalid(label, `n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
  const headSize = dim / nHeads;
  if (headSize % 2 !== 0) throw invalid(label, `head size ${headSize} is odd; RoPE needs pairs`);
  return {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize: Math.abs(vocabRaw),
    seqLen,
    sharedClassifier: vocabRaw > 0,
    headSize,
  };
}

/** Total file size a v0 checkpoint with this header must have. */
export function llama2cExpectedBytes(c: Llama2cConfig): number {
  const kvDim = c.nKvHeads * c.headSize;
  const perLayer = 2 * c.dim + c.dim * c.dim * 2 + 2 * c.dim * kvDim + 3 * c.dim * c.hiddenDim;
  const floats =
    c.vocabSize * c.dim +
    c.nLayers * perLayer +
    c.dim +
    c.seqLen * c.headSize + // freq_cis_real + freq_cis_imag, (seq_len, head_size/2) each
    (c.sharedClassifier ? 0 : c.vocabSize * c.dim);
  return LLAMA2C_HEADER_BYTES + 4 * floats;
}

/**
 * Reorders the rows of one q/k projection from llama2.c's interleaved-pair RoPE order to HF's rotate_half order.
 * w: (nHeads*headSize, cols) f32 bytes. Within each head, HF row j*(headSize/2)+i takes llama2.c row 2i+j
 * (j in {0,1}): the pair (2i, 2i+1) rotated together in llama2.c becomes (i, i+headSize/2) in HF.
 * This is the permutation HF's convert_llama_weights_to_hf applies to Meta's (equally interleaved) weights.
 */
export function permuteRopeRows(w: Uint8Array, nHeads: number, headSize: number, cols: number): Uint8Array {
  const rowBytes = cols * 4;
  if (w.byteLength !== nHeads * headSize * rowBytes) {
    throw new SiftError('INTERNAL', `permuteRopeRows: ${w.byteLength} bytes for (${nHeads * headSize}, ${cols}) f32`);
  }
  const out = new Uint8Array(w.byteLength);
  const half = headSize / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (h * headSize + 2 * i + j) * rowBytes;
        const dst = (h * headSize + j * half + i) * rowBytes;
        out.set(w.subarray(src, src + rowBytes), dst);
      }
    }
  }
  return out;
}

/** The checkpoint's tensors under HF Llama names (F32; q/k rows permuted). Validates the file size. */
export function llama2cTensors(bytes: Uint8Array, label: string): { config: Llama2cConfig; tensors: TensorToWrite[] } {
  const c = readLlama2cHeader(bytes, label);
  const expected = llama2cExpectedBytes(c);
  if (bytes.byteLength !== expected) {
    const what = bytes.byteLength < expected ? 'truncated' : 'has trailing bytes';
    throw invalid(
      label,
      `${what}: the header (dim ${c.dim}, hidden ${c.hiddenDim}, layers ${c.nLayers}, heads ${c.nHeads}/${c.nKvHeads}, ` +
        `vocab ${c.sharedClassifier ? '' : '-'}${c.vocabSize}, seq_len ${c.seqLen}) needs ${expected} bytes, found ${bytes.byteLength}`,
    );
  }
  const kvDim = c.nKvHeads * c.headSize;
  let off = LLAMA2C_HEADER_BYTES;
  // Takes the next (n, rows, cols) block and returns per-n byte views.
  const take = (n: number, rows: number, cols: number): Uint8Array[] => {
    const each = rows * cols * 4;
    const views = Array.from({ length: n }, (_, i) => bytes.subarray(off + i * each, off + (i + 1) * each));
    off += n * each;
    return views;
  };
  const L = c.nLayers;
  const emb = take(1, c.vocabSize, c.dim)[0];
  const rmsAtt = take(L, 1, c.dim);
  const wq = take(L, c.dim, c.dim);
  const wk = take(L, kvDim, c.dim);
  const wv = take(L, kvDim, c.dim);
  const wo = take(L, c.dim, c.dim);
  const rmsFfn = take(L, 1, c.dim);
  const w1 = take(L, c.hiddenDim, c.dim);
  const w2 = take(L, c.dim, c.hiddenDim);
  const w3 = take(L, c.hiddenDim, c.dim);
  const rmsFinal = take(1, 1, c.dim)[0];
  take(2, c.seqLen, c.headSize / 2); // freq_cis_real, freq_cis_imag
  const wcls = c.sharedClassifier ? null : take(1, c.vocabSize, c.dim)[0];

  const t = (name: string, shape: number[], data: Uint8Array): TensorToWrite => ({ name, dtype: 'F32', shape, data });
  const tensors: TensorToWrite[] = [t('model.embed_tokens.weight', [c.vocabSize, c.dim], emb)];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    tensors.push(
      t(`${p}input_layernorm.weight`, [c.dim], rmsAtt[l]),
      t(`${p}self_attn.q_proj.weight`, [c.dim, c.dim], permuteRopeRows(wq[l], c.nHeads, c.headSize, c.dim)),
      t(`${p}self_attn.k_proj.weight`, [kvDim, c.dim], permuteRopeRows(wk[l], c.nKvHeads, c.headSize, c.dim)),
      t(`${p}self_attn.v_proj.weight`, [kvDim, c.dim], wv[l]),
      t(`${p}self_attn.o_proj.weight`, [c.dim, c.dim], wo[l]),
      t(`${p}post_attention_layernorm.weight`, [c.dim], rmsFfn[l]),
      t(`${p}mlp.gate_proj.weight`, [c.hiddenDim, c.dim], w1[l]),
      t(`${p}mlp.down_proj.weight`, [c.dim, c.hiddenDim], w2[l]),
      t(`${p}mlp.up_proj.weight`, [c.hiddenDim, c.dim], w3[l]),
    );
  }
  tensors.push(t('model.norm.weight', [c.dim], rmsFinal));
  if (wcls) tensors.push(t('lm_head.weight', [c.vocabSize, c.dim], wcls));
  return { config: c, tensors };
}

/** config.json for the imported model. */
export function hfConfig(c: Llama2cConfig): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: c.headSize,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    rope_scaling: null,
    hidden_act: 'silu',
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: c.sharedClassifier,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'float32',
  };
}

export interface ImportLlama2cOptions {
  /** The v0 checkpoint (.bin): a path, or bytes with a label for messages. */
  checkpoint: ByteSource;
  /** The matching tokenizer.bin: a path, or bytes with a label. */
  tokenizer: ByteSource;
  /** Destination HF directory; built in `<dest>.tmp-<pid>` and renamed into place. */
  dest: string;
  /** Marker name (default: basename of dest) and source description. */
  name?: string;
  source?: string;
  /** sha256 of the checkpoint bytes if the caller already computed it. */
  sha256?: string;
  /** If `dest` is already a complete model (e.g. a concurrent pull finished first), keep it. */
  keepComplete?: boolean;
}

export interface ImportResult {
  dir: string;
  config: Llama2cConfig;
  /** sha256 (hex) of the checkpoint bytes. */
  sha256: string;
}

function writeJson(file: string, obj: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(obj, null, 2)}\n`);
}

/** llama2.c's BOS id, which also ends a generated sequence there (a story ends where the next one would begin). */
export const LLAMA2C_BOS = 1;

/**
 * Stop ids a model directory needs beyond its generation_config.json: [BOS] for a directory sift imported from a
 * llama2.c checkpoint (llama2.c stops at BOS). Imports since the marker records `format` also write BOS into
 * generation_config.json; earlier ones are recognised by their marker's checksum in the registry of known models.
 */
export function llama2cStopIds(dir: string, registry: Readonly<Record<string, KnownModel>> = KNOWN_MODELS): number[] {
  const m = readMarker(dir);
  if (m === null) return [];
  const known = Object.values(registry).some((k) => k.format === 'llama2c' && k.source.sha256 === m.sha256);
  return m.format === 'llama2c' || known ? [LLAMA2C_BOS] : [];
}

/** Imports a llama2.c v0 checkpoint + tokenizer.bin into an HF directory at `opts.dest`, atomically. */
export async function importLlama2c(opts: ImportLlama2cOptions): Promise<ImportResult> {
  const ckpt = load(opts.checkpoint);
  const tok = load(opts.tokenizer);
  const { config, tensors } = llama2cTensors(ckpt.bytes, ckpt.label);
  const vocab = parseLlama2cTokenizer(tok.bytes, config.vocabSize, tok.label);
  const tokenizerJson = buildTokenizerJson(vocab);
  const sha256 = opts.sha256 ?? createHash('sha256').update(ckpt.bytes).digest('hex');
  const dest = path.resolve(opts.dest);
  await writeModelDirAtomically(
    dest,
    { name: opts.name ?? path.basename(dest), sha256, source: opts.source ?? ckpt.label, format: 'llama2c' },
    (tmp) => {
      writeJson(path.join(tmp, 'config.json'), hfConfig(config));
      writeSafetensors(path.join(tmp, 'model.safetensors'), tensors, {
        format: 'pt',
        source: 'llama2.c v0 checkpoint, imported by sift',
      });
      writeJson(path.join(tmp, 'tokenizer.json'), tokenizerJson);
      writeJson(path.join(tmp, 'tokenizer_config.json'), {
        tokenizer_class: 'LlamaTokenizerFast',
        bos_token: '<s>',
        eos_token: '</s>',
        unk_token: '<unk>',
        pad_token: null,
        add_bos_token: true,
        add_eos_token: false,
        clean_up_tokenization_spaces: false,
        legacy: true,
        model_max_length: config.seqLen,
      });
      // llama2.c ends a sequence where the model writes BOS (run.c: "the BOS (=1) token delimits sequences")
      writeJson(path.join(tmp, 'generation_config.json'), {
        _from_model_config: true,
        bos_token_id: LLAMA2C_BOS,
        eos_token_id: [2, LLAMA2C_BOS],
      });
    },
    { keepComplete: opts.keepComplete },
  );
  return { dir: dest, config, sha256 };
}
