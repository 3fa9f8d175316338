/**
 * The forward pass of one synthetic checkpoint against the reference forward pass (shared by the forward tests of
 * the default kernel variants and of the GPU variants): prefill logits of every token through non-contiguous pages,
 * then decode steps one token at a time (the captured decode path).
 */
import assert from 'node:assert/strict';
import { type Checkpoint, openCheckpoint } from '../../checkpoint/checkpoint.js';
import { type SyntheticVariant, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { engineConfig } from '../../config/engine.js';
import { isSiftError } from '../../config/errors.js';
import type { ForwardBatch, KernelChoice } from '../../model/forward.js';
import { gpuForwardGap } from '../../model/gpu-support.js';
import { ModelRunner } from '../../model/runner.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { ReferenceModel, referenceForward } from '../reference/forward.js';

/** GPU f32 accumulation vs the f64 reference over the same (decoded) weights, both with an f16 KV cache. */
export const TOL = { atol: 2e-3, rtol: 2e-3 };
/**
 * The GPU's KV cache is f16: the reference rounds its K and V the same way (the tolerance stays f32's). The context
 * length that fixes dynamic / longrope scaling is the block table's reach (maxContext 256 in checkVariant).
 */
export const KV_F16 = { kvF16: true, contextLength: 256 };

/** A batch whose rows are all prefill rows (plain causal attention), logits for any rows asked. */
export function prefillBatch(b: {
  tokens: ArrayLike<number>;
  positions: ArrayLike<number>;
  tokenSeq: ArrayLike<number>;
  blockTable: Uint32Array;
  numSeqs: number;
  logitRows: ArrayLike<number>;
}): ForwardBatch {
  return {
    tokens: Uint32Array.from(b.tokens),
    positions: Uint32Array.from(b.positions),
    tokenSeq: Uint32Array.from(b.tokenSeq),
    blockTable: b.blockTable,
    numSeqs: b.numSeqs,
    logitRows: Uint32Array.from(b.logitRows),
    rows: Array.from({ length: b.numSeqs }, (_, r) => ({ kind: 'prefill' as const, seqId: `row${r}` })),
  };
}

export function tableFor(pages: number[], maxPagesPerSeq: number): Uint32Array {
  const t = new Uint32Array(maxPagesPerSeq);
  t.set(pages);
  return t;
}

/** Prefill logits of every token, then 4 decode steps, against the reference, with the given kernel variants. */
export async function checkVariant(dir: string, variant: SyntheticVariant, kernels?: KernelChoice): Promise<void> {
  writeSyntheticCheckpoint(dir, variant);
  const what = `${variant.name}${kernels ? ` (${kernels.variant} kernels${kernels.subgroups === false ? ', no subgroups' : ''})` : ''}`;
  await checkForward(dir, { what, seed: variant.seed, kernels });
}

/**
 * checkVariant's checks on the model in `dir` as loaded with `engine` flags (e.g. quantize), against the reference
 * over `reference(ckpt)` (default: the checkpoint itself; a quantized load compares with its decoded weights).
 */
export async function checkForward(
  dir: string,
  o: {
    what: string;
    seed: number;
    kernels?: KernelChoice;
    engine?: Record<string, unknown>;
    reference?: (ckpt: Checkpoint) => Checkpoint;
    /** Further checks on the loaded runner (its weights' layout, say). */
    inspect?: (runner: ModelRunner) => void;
  },
): Promise<void> {
  const gpu = await testGpu();
  const cfg = engineConfig({
    flags: { pageSize: 16, kvCacheMib: 4, maxBatchTokens: 32, maxSeqs: 4, maxContext: 256, ...o.engine },
  });
  const probe = openCheckpoint(dir);
  const gap = gpuForwardGap(probe.config, cfg.maxContext ?? probe.config.maxPositionEmbeddings);
  probe.close();
  if (gap) {
    // Not on the GPU yet (model/gpu-support.ts): the load must refuse it by name rather than run without it.
    await assert.rejects(ModelRunner.load(dir, cfg, { gpu, kernels: o.kernels }), (e: unknown) => {
      assert.ok(isSiftError(e, 'CHECKPOINT_UNSUPPORTED') && e.message.includes(gap), String(e));
      return true;
    });
    return;
  }
  const engine = await ModelRunner.load(dir, cfg, { gpu, maxLogitRows: 32, kernels: o.kernels });
  const opened = openCheckpoint(dir);
  const ckpt = o.reference ? o.reference(opened) : opened;
  const what = o.what;
  try {
    const rng = new Rng(o.seed);
    const V = engine.config.vocabSize;
    const fwd = engine.forwardPass;
    // 1. prefill of one sequence, logits of every token; pages deliberately non-contiguous
    const prompt = Array.from({ length: 21 }, () => rng.int(0, V - 1));
    const table = tableFor([5, 2], fwd.maxPagesPerSeq);
    const got = await fwd.forward(
      prefillBatch({
        tokens: prompt,
        positions: prompt.map((_, i) => i),
        tokenSeq: prompt.map(() => 0),
        blockTable: table,
        numSeqs: 1,
        logitRows: prompt.map((_, i) => i),
      }),
    );
    assertNoGpuErrors(gpu);
    assertClose(got, referenceForward(ckpt, prompt, KV_F16), TOL, `${what} prefill logits`);

    // 2. decode 4 tokens one at a time after that prompt
    const ref = new ReferenceModel(ckpt, KV_F16);
    ref.forward(prompt);
    for (let s = 0; s < 4; s++) {
      const id = rng.int(0, V - 1);
      const pos = prompt.length + s;
      const g = await engine.decodeOneToken(id, pos, table);
      const w = ref.forward([id]);
      assertClose(g, w, TOL, `${what} decode step ${s}`);
    }
    o.inspect?.(engine);
  } finally {
    opened.close();
    engine.destroy();
  }
}
