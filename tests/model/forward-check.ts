/**
 * The forward pass of one synthetic checkpoint against the reference forward pass (shared by the forward tests of
 * the default kernel variants and of the GPU variants): prefill logits of every token through non-contiguous pages,
 * then decode steps one token at a time (the captured decode path).
 */
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { type SyntheticVariant, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { engineConfig } from '../../config/engine.js';
import type { ForwardBatch, KernelChoice } from '../../model/forward.js';
import { ModelRunner } from '../../model/runner.js';
import { assertClose } from '../helpers/compare.js';
import { assertNoGpuErrors, testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';
import { ReferenceModel, referenceForward } from '../reference/forward.js';

/** GPU f32 accumulation vs the f64 reference over the same (decoded) weights, both with an f16 KV cache. */
export const TOL = { atol: 2e-3, rtol: 2e-3 };
/** The GPU's KV cache is f16: the reference rounds its K and V the same way (the tolerance stays f32's). */
export const KV_F16 = { kvF16: true };

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
  const gpu = await testGpu();
  writeSyntheticCheckpoint(dir, variant);
  const cfg = engineConfig({
    flags: { pageSize: 16, kvCacheMib: 4, maxBatchTokens: 32, maxSeqs: 4, maxContext: 256 },
  });
  const engine = await ModelRunner.load(dir, cfg, { gpu, maxLogitRows: 32, kernels });
  const ckpt = openCheckpoint(dir);
  const what = `${variant.name}${kernels ? ` (${kernels.variant} kernels${kernels.subgroups === false ? ', no subgroups' : ''})` : ''}`;
  try {
    const rng = new Rng(variant.seed);
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
  } finally {
    ckpt.close();
    engine.destroy();
  }
}
