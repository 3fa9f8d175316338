/**
 * The calibration pass `sift imatrix` runs (model/imatrix.ts, model/gram.ts): the engine's forward pass, dense and in
 * the original head order, over documents of token ids (each a fresh sequence, cut into windows of `windowTokens`),
 * prefilled in chunks of maxBatchTokens, with a tap at every linear layer's input (model/forward.ts ActivationTap):
 * q/k/v share the attention norm's output, gate/up the MLP norm's, o_proj reads the attention output, down_proj the
 * gated activation, lm_head the final norm's output.
 */
import type { ModelConfig } from '../checkpoint/config.js';
import { SiftError } from '../config/errors.js';
import { buildForwardBatch } from './batch.js';
import type { ActivationPoint, ActivationTap, ForwardBatch } from './forward.js';
import type { ModelRunner } from './runner.js';

/** One distinct linear-layer input: its point, layer (numLayers for lm_head) and width. */
export interface ActivationSlot {
  point: ActivationPoint;
  layer: number;
  cols: number;
}

/** Every distinct linear-layer input of a model, in forward order. */
export function activationSlots(c: ModelConfig): ActivationSlot[] {
  const out: ActivationSlot[] = [];
  for (let li = 0; li < c.numLayers; li++) {
    out.push({ point: 'qkv', layer: li, cols: c.hiddenSize });
    out.push({ point: 'o', layer: li, cols: c.numHeads * c.headDim });
    out.push({ point: 'gate-up', layer: li, cols: c.hiddenSize });
    out.push({ point: 'down', layer: li, cols: c.intermediateSize });
  }
  out.push({ point: 'lm-head', layer: c.numLayers, cols: c.hiddenSize });
  return out;
}

export interface ActivationPassOptions {
  /** Tokens per window (a fresh sequence each); at most the engine's context. */
  windowTokens: number;
  onProgress?: (tokensDone: number, tokensTotal: number) => void;
  /** Awaited after each chunk's forward pass (to read back what the tap wrote). */
  afterChunk?: () => Promise<void>;
}

/**
 * Runs `step` over every prefill chunk (the engine's maxBatchTokens) of every window of `win` tokens of every document,
 * in order, each window a fresh sequence on pages 0.. of its block table, after checking the engine runs dense, in
 * the original head order, and holds a window; returns the tokens. Shared by the activation pass below and the
 * attention-mass calibration (model/calibration.ts).
 */
export async function forEachWindowChunk(
  engine: ModelRunner,
  docs: readonly (readonly number[])[],
  win: number,
  step: (batch: ForwardBatch, tokens: number) => Promise<void>,
): Promise<number> {
  const fwd = engine.forwardPass;
  if (engine.weights.headPlan) {
    throw new SiftError('INTERNAL', 'calibration pass: weights must be in their original head order');
  }
  if (!Number.isInteger(win) || win < 1) throw new SiftError('INVALID_ARGUMENT', `window of ${win} tokens`);
  const pages = Math.ceil(win / engine.kv.pageSize);
  if (win > engine.maxContext || pages > engine.kv.numPages) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `a window of ${win} tokens does not fit the engine (context ${engine.maxContext}, ${engine.kv.numPages} KV pages)`,
    );
  }
  const chunk = fwd.maxBatchTokens;
  const table = Array.from({ length: pages }, (_, i) => i); // the window's block table: pages 0..pages-1
  let total = 0;
  for (const d of docs) {
    for (let w0 = 0; w0 < d.length; w0 += win) {
      const window = d.slice(w0, w0 + win);
      for (let s = 0; s < window.length; s += chunk) {
        const part = window.slice(s, s + chunk);
        const batch = buildForwardBatch(
          [{ kind: 'prefill', seqId: 'calibration', start: s, tokens: part, pages: table, sample: false }],
          { maxPagesPerSeq: fwd.maxPagesPerSeq },
        );
        await step(batch, part.length);
        total += part.length;
      }
    }
  }
  return total;
}

/** Runs the pass (see the file comment) with `tap` at every linear input; returns the tokens it ran. */
export async function runActivationPass(
  engine: ModelRunner,
  docs: readonly (readonly number[])[],
  tap: ActivationTap,
  opts: ActivationPassOptions,
): Promise<number> {
  const total = docs.reduce((n, d) => n + d.length, 0);
  if (total === 0) throw new SiftError('INVALID_ARGUMENT', 'calibration: the text has no tokens');
  let done = 0;
  return forEachWindowChunk(engine, docs, opts.windowTokens, async (batch, tokens) => {
    engine.forwardPass.encode(batch, { activation: tap });
    await opts.afterChunk?.();
    done += tokens;
    opts.onProgress?.(done, total);
  });
}
