/**
 * Phi-3 stores each layer's q/k/v projections as one `self_attn.qkv_proj.weight` (q rows, then k rows, then v rows)
 * and gate/up as one `mlp.gate_up_proj.weight` (gate rows, then up rows). sift splits them on read: the q/k/v and
 * gate/up names every other part of sift uses become row ranges of the stored tensor, so the loader, the
 * quantizers and the head permutation see a Llama-shaped checkpoint. Rows are contiguous, so a split costs no copy
 * beyond the read itself. The GPU upload (model/weights.ts) fuses q/k/v and gate/up again for its fused kernels: it
 * takes a stored qkv_proj as it is when nothing reorders its rows.
 */
import { SiftError } from '../config/errors.js';
import { bytesPerElement } from '../util/dtype.js';
import type { ModelConfig } from './config.js';
import type { SafetensorsDir, SafetensorsFile, TensorInfo } from './safetensors.js';

/** The tensors of a checkpoint directory as openCheckpoint reads them. */
export interface TensorSource {
  readonly source: string;
  readonly tensorNames: string[];
  has(name: string): boolean;
  /** The stored tensor that holds `name` (itself unless fused). */
  storedName(name: string): string;
  fileOf(name: string): SafetensorsFile | undefined;
  info(name: string): TensorInfo;
  read(name: string): Uint8Array;
}

/** One HF tensor held as rows [row0, row0 + rows) of a stored fused tensor of `storedRows` rows. */
export interface RowSlice {
  stored: string;
  row0: number;
  rows: number;
  storedRows: number;
}

/** HF name -> its row range in a fused tensor, for every fused tensor `config`'s architecture stores. */
export function fusedSlices(config: ModelConfig): Map<string, RowSlice> {
  const out = new Map<string, RowSlice>();
  if (config.architecture !== 'Phi3ForCausalLM') return out;
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  const inter = config.intermediateSize;
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    const qkv = `${p}.self_attn.qkv_proj.weight`;
    const gateUp = `${p}.mlp.gate_up_proj.weight`;
    const n = q + 2 * kv;
    out.set(`${p}.self_attn.q_proj.weight`, { stored: qkv, row0: 0, rows: q, storedRows: n });
    out.set(`${p}.self_attn.k_proj.weight`, { stored: qkv, row0: q, rows: kv, storedRows: n });
    out.set(`${p}.self_attn.v_proj.weight`, { stored: qkv, row0: q + kv, rows: kv, storedRows: n });
    out.set(`${p}.mlp.gate_proj.weight`, { stored: gateUp, row0: 0, rows: inter, storedRows: 2 * inter });
    out.set(`${p}.mlp.up_proj.weight`, { stored: gateUp, row0: inter, rows: inter, storedRows: 2 * inter });
  }
  return out;
}

/**
 * `files` with the fused tensors of `config` readable under their split names (the stored names stay readable too).
 * A fused tensor of the wrong shape is CHECKPOINT_INVALID naming it. The last fused tensor read is kept, so reading
 * q, k and v in turn reads qkv_proj from disk once.
 */
export function splitFusedTensors(files: SafetensorsDir, config: ModelConfig): TensorSource {
  const slices = fusedSlices(config);
  if (slices.size === 0) return Object.assign(files, { storedName: (name: string) => name });
  let cached: { name: string; bytes: Uint8Array } | null = null;
  const storedInfo = (s: RowSlice): TensorInfo => {
    const info = files.info(s.stored);
    if (info.shape.length !== 2 || info.shape[0] !== s.storedRows || info.shape[1] !== config.hiddenSize) {
      throw new SiftError(
        'CHECKPOINT_INVALID',
        `${files.fileOf(s.stored)?.path ?? files.source}: tensor ${s.stored} has shape (${info.shape.join(', ')}), ` +
          `expected (${s.storedRows}, ${config.hiddenSize})`,
      );
    }
    return info;
  };
  return {
    source: files.source,
    get tensorNames() {
      return files.tensorNames;
    },
    has: (name) => {
      const s = slices.get(name);
      return s ? files.has(s.stored) : files.has(name);
    },
    storedName: (name) => slices.get(name)?.stored ?? name,
    fileOf: (name) => files.fileOf(slices.get(name)?.stored ?? name),
    info: (name) => {
      const s = slices.get(name);
      if (!s) return files.info(name);
      const info = storedInfo(s);
      return { dtype: info.dtype, shape: [s.rows, info.shape[1]] };
    },
    read: (name) => {
      const s = slices.get(name);
      if (!s) return files.read(name);
      const info = storedInfo(s);
      if (cached?.name !== s.stored) cached = { name: s.stored, bytes: files.read(s.stored) };
      const rowBytes = info.shape[1] * bytesPerElement(info.dtype);
      return cached.bytes.slice(s.row0 * rowBytes, (s.row0 + s.rows) * rowBytes);
    },
  };
}
