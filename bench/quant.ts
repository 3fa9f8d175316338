/**
 * `sift bench quant`: weight formats side by side on one model: the unquantized model (F32 as stored), its BF16
 * twin, --quantize int8 and q4 (one row per q4 group size), and any GGUF files of the same model. Per format:
 *   - weight bytes on the GPU and weight bytes one decode step reads (decodeStepWeightBytes);
 *   - decode tokens/s of one sequence at a short context (dense attention), median of `repeat` runs of `steps`;
 *   - agreement with the unquantized model: teacher-forced over the same sequences (the unquantized model's own
 *     greedy continuation from BOS, then stories it samples), the share of positions whose greedy token equals the
 *     unquantized one and the mean / max KL(unquantized || format) of the next-token distributions (on the host).
 * Each sequence runs as one prefill with the logits of every position, on the reference and on each format.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openCheckpoint } from '../checkpoint/checkpoint.js';
import { resolveModel } from '../checkpoint/pull.js';
import { writeSafetensors } from '../checkpoint/safetensors.js';
import type { EngineConfig } from '../config/engine.js';
import { argmax, Sampler } from '../engine/sampler.js';
import type { ForwardBatch } from '../model/forward.js';
import { ModelRunner } from '../model/runner.js';
import { decodeStepWeightBytes } from '../model/weights.js';
import type { Gpu } from '../shaders/runtime.js';
import { encodeFromF32 } from '../util/dtype.js';
import { decodeBatch, disjointTable, prefillSeq, pseudoTokens, tableRow } from './model-steps.js';
import { type Agreement, agreement, mdTable, poolAgreement, type Stat, stat } from './stats.js';

export interface QuantBenchOptions {
  /**
   * 'f32' (the model as stored), 'bf16', 'int8', 'q4g<N>' (+ 'e8' / 'v8' / 'd8': embedding and lm_head / v_proj /
   * down_proj at int8; + 'i': calibrated with the importance matrix `imatrix`, 'a': and per-channel scales folded in,
   * 'g': GPTQ with the Gram matrices `gram`, 'o': GPTQ with act-order), or a .gguf file.
   */
  formats: string[];
  /** The importance matrix (`sift imatrix`) of the calibrated q4 formats (suffix 'i'). */
  imatrix?: string;
  /** GPTQ's statistics (`sift imatrix --full`) of the GPTQ formats (suffixes 'g', 'o'). */
  gram?: string;
  /** Teacher-forced sequences: the greedy one plus sampled stories. */
  sequences: number;
  /** Positions compared per sequence. */
  length: number;
  steps: number;
  repeat: number;
  onProgress?: (msg: string) => void;
}

export interface QuantRow {
  format: string;
  weightBytes: number;
  decodeStepBytes: number;
  /** Reference decode-step bytes / this format's. */
  bytesReduction: number;
  tokensPerS: Stat;
  agreement: Agreement | null;
}

export interface QuantBenchResult {
  suite: 'quant';
  reference: string;
  sequences: number;
  length: number;
  steps: number;
  repeat: number;
  rows: QuantRow[];
  notes: string[];
}

/** A BF16 copy of an HF directory's weights (side files copied), written once under $TMPDIR. */
function bf16Twin(dir: string): string {
  const out = path.join(os.tmpdir(), 'sift-bf16', path.basename(dir));
  if (fs.existsSync(path.join(out, 'model.safetensors'))) return out;
  fs.mkdirSync(out, { recursive: true });
  for (const f of fs.readdirSync(dir)) if (f.endsWith('.json')) fs.copyFileSync(path.join(dir, f), path.join(out, f));
  const ck = openCheckpoint(dir);
  try {
    const tensors = ck.tensorNames.map((name) => ({
      name,
      dtype: 'bf16' as const,
      shape: ck.info(name).shape,
      data: encodeFromF32(ck.readF32(name), 'bf16'),
    }));
    writeSafetensors(path.join(out, 'model.safetensors'), tensors);
  } finally {
    ck.close();
  }
  return out;
}

async function loadFormat(
  dir: string,
  format: string,
  cfg: EngineConfig,
  gpu: Gpu,
  imatrix: string | undefined,
  gram: string | undefined,
): Promise<ModelRunner> {
  const opts = { gpu, maxLogitRows: cfg.maxBatchTokens ?? undefined };
  if (format.endsWith('.gguf')) return ModelRunner.load(await resolveModel(format), cfg, opts);
  if (format === 'f32') return ModelRunner.load(dir, cfg, opts);
  if (format === 'bf16') return ModelRunner.load(bf16Twin(dir), cfg, opts);
  if (format === 'int8') return ModelRunner.load(dir, { ...cfg, quantize: 'int8' }, opts);
  const g = /^q4g(\d+)((?:e8|v8|d8)*)([iago]?)$/.exec(format);
  if (g) {
    const roles: Record<string, string> = { e8: 'embedding', v8: 'attn-v', d8: 'ffn-down' };
    const quantizeInt8 = (g[2].match(/../g) ?? []).map((t) => roles[t]).join(',');
    const isGptq = g[3] === 'g' || g[3] === 'o';
    if (isGptq && !gram) throw new Error(`format ${format} (GPTQ) needs --gram FILE (\`sift imatrix --full\`)`);
    if ((g[3] === 'i' || g[3] === 'a') && !imatrix) {
      throw new Error(`format ${format} (calibrated q4) needs --imatrix FILE`);
    }
    const q = {
      quantize: 'q4' as const,
      quantizeGroup: Number(g[1]),
      quantizeInt8,
      quantizeImatrix: g[3] === 'i' || g[3] === 'a' ? (imatrix as string) : '',
      quantizeChannelScales: g[3] === 'a',
      quantizeGptq: isGptq ? (gram as string) : '',
      quantizeGptqActOrder: g[3] === 'o',
    };
    return ModelRunner.load(dir, { ...cfg, ...q }, opts);
  }
  throw new Error(`unknown format ${format} (f32, bf16, int8, q4g<N>[e8|v8|d8][i|a|g|o], or a .gguf file)`);
}

/** Median decode tokens/s of one sequence after a 16-token prefill, dense attention. */
async function decodeSpeed(engine: ModelRunner, steps: number, repeat: number): Promise<Stat> {
  const ps = engine.kv.pageSize;
  const table = disjointTable(engine, 1, Math.ceil((16 + steps + 1) / ps));
  const row = tableRow(engine, table, 0);
  const tps: number[] = [];
  for (let r = 0; r <= repeat; r++) {
    const id = `quant-speed-${r}`;
    let logits = await prefillSeq(engine, id, pseudoTokens(16, engine.config.vocabSize, r), row);
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) {
      logits = await decodeBatch(engine, [id], [argmax(logits)], [16 + i], table, Number.POSITIVE_INFINITY);
    }
    if (r > 0) tps.push((steps * 1000) / (performance.now() - t0)); // run 0 warms up
    engine.release(id);
  }
  return stat(tps);
}

/** Logits (T, vocab) of every position of `ids` run as one prefill into block-table row `rowTable`. */
async function allLogits(engine: ModelRunner, seqId: string, ids: readonly number[], rowTable: Uint32Array) {
  const T = ids.length;
  const batch: ForwardBatch = {
    tokens: Uint32Array.from(ids),
    positions: Uint32Array.from(ids, (_, i) => i),
    tokenSeq: new Uint32Array(T),
    blockTable: rowTable,
    numSeqs: 1,
    logitRows: Uint32Array.from(ids, (_, i) => i),
    rows: [{ kind: 'prefill', seqId }],
  };
  const logits = await engine.forwardPass.forward(batch);
  engine.release(seqId);
  return logits;
}

export async function runQuantBench(
  dir: string,
  engineCfg: EngineConfig,
  o: QuantBenchOptions,
): Promise<QuantBenchResult> {
  // logits of every row of one chunk: a fixed chunk (512 unless --max-batch-tokens says otherwise)
  const cfg = { ...engineCfg, maxBatchTokens: engineCfg.maxBatchTokens ?? 512 };
  const ref = await ModelRunner.load(dir, cfg, { maxLogitRows: cfg.maxBatchTokens });
  const gpu = ref.gpu;
  try {
    // Sequences, decoded together: 0 is the reference's greedy continuation of BOS, the others stories it samples.
    const L = Math.min(o.length, ref.maxContext, ref.config.maxPositionEmbeddings, cfg.maxBatchTokens);
    const n = o.sequences;
    const ps = ref.kv.pageSize;
    const table = disjointTable(ref, n, Math.ceil(L / ps));
    const ids = Array.from({ length: n }, (_, s) => `quant-seq-${s}`);
    const samplers = ids.map((_, s) => new Sampler({ temperature: 1, topK: 0, topP: 0.95, seed: 4242 + s }));
    const seqs = ids.map(() => [1]);
    const V = ref.config.vocabSize;
    for (let pos = 0; pos + 1 < L; pos++) {
      if (pos % 16 === 0) o.onProgress?.(`reference: ${n} sequences, token ${pos}/${L}`);
      const lg = await decodeBatch(
        ref,
        ids,
        seqs.map((q) => q[pos]),
        ids.map(() => pos),
        table,
        Number.POSITIVE_INFINITY,
      );
      seqs.forEach((q, s) => {
        const row = lg.subarray(s * V, (s + 1) * V);
        q.push(s === 0 ? argmax(row) : samplers[s].sample(row));
      });
    }
    for (const id of ids) ref.release(id);
    const refLogits: Float32Array[] = [];
    for (let s = 0; s < n; s++) refLogits.push(await allLogits(ref, ids[s], seqs[s], tableRow(ref, table, s)));
    const rows: QuantRow[] = [];
    let refBytes = 0;
    for (const format of o.formats) {
      o.onProgress?.(`${format}: loading`);
      const eng = format === 'f32' ? ref : await loadFormat(dir, format, cfg, gpu, o.imatrix, o.gram);
      try {
        if (eng.config.vocabSize !== V) throw new Error(`${format}: vocab differs from the reference`);
        const stepBytes = decodeStepWeightBytes(eng.weights);
        if (format === 'f32') refBytes = stepBytes;
        o.onProgress?.(`${format}: decode speed`);
        const tokensPerS = await decodeSpeed(eng, o.steps, o.repeat);
        let agree: Agreement | null = null;
        if (eng !== ref) {
          o.onProgress?.(`${format}: agreement`);
          const per: Agreement[] = [];
          for (let s = 0; s < n; s++) {
            const b = await allLogits(eng, ids[s], seqs[s], tableRow(ref, table, s));
            const a = refLogits[s];
            for (let t = 0; t < seqs[s].length; t++) {
              per.push(agreement([a.subarray(t * V, (t + 1) * V)], [b.subarray(t * V, (t + 1) * V)]));
            }
          }
          agree = poolAgreement(per);
        }
        rows.push({
          format,
          weightBytes: eng.weights.bytes,
          decodeStepBytes: stepBytes,
          bytesReduction: 0,
          tokensPerS,
          agreement: agree,
        });
      } finally {
        if (eng !== ref) eng.destroy();
      }
    }
    for (const r of rows) r.bytesReduction = refBytes > 0 ? refBytes / r.decodeStepBytes : 0;
    return {
      suite: 'quant',
      reference: 'f32',
      sequences: n,
      length: L,
      steps: o.steps,
      repeat: o.repeat,
      rows,
      notes: [
        `agreement: ${n} sequences of ${L} positions (BOS included), teacher-forced on the reference's tokens (sequence 0: its greedy continuation of BOS; the rest: stories it samples at temperature 1, top-p 0.95, seeds 4242..); each run as one prefill, every position compared`,
        'decode tokens/s: one sequence after a 16-token prefill, dense attention, median of the repeats after one warm-up',
        'decode-step bytes: all layer matrices, norms and biases, lm_head, and one embedding row, as stored on the GPU',
      ],
    };
  } finally {
    ref.destroy();
  }
}

export function quantTable(r: QuantBenchResult): string {
  const mib = (b: number) => (b / 2 ** 20).toFixed(2);
  const bf16 = r.rows.find((x) => x.format === 'bf16');
  return [
    mdTable(
      [
        'format',
        'weights (MiB)',
        'bytes / decode step (MiB)',
        'vs F32',
        bf16 ? 'vs BF16' : '',
        'decode tok/s',
        'greedy match',
        'mean KL',
        'max KL',
      ].filter(Boolean),
      r.rows.map(
        (x) =>
          [
            path.basename(x.format),
            mib(x.weightBytes),
            mib(x.decodeStepBytes),
            `${x.bytesReduction.toFixed(2)}x less`,
            bf16 ? `${(bf16.decodeStepBytes / x.decodeStepBytes).toFixed(2)}x less` : null,
            `${x.tokensPerS.median.toFixed(1)} (${x.tokensPerS.min.toFixed(1)}-${x.tokensPerS.max.toFixed(1)})`,
            x.agreement ? `${(x.agreement.tokenMatch * 100).toFixed(1)}% of ${x.agreement.steps}` : 'reference',
            x.agreement ? x.agreement.meanKl.toExponential(2) : '',
            x.agreement ? x.agreement.maxKl.toExponential(2) : '',
          ].filter((c) => c !== null) as string[],
      ),
    ),
    '',
    ...r.notes.map((n) => `- ${n}`),
  ].join('\n');
}
