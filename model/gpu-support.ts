/**
 * What the GPU forward pass does not run yet, decided once at load: a model that needs it is refused with
 * CHECKPOINT_UNSUPPORTED naming the feature, never served with the feature silently dropped. The plain-TS reference
 * (tests/reference/forward.ts) implements all of them.
 *   - Gemma 2/3 (the (1 + w) norms, sandwich norms, GeGLU, scaled embeddings, soft-capped logits and per-layer RoPE
 *     of checkpoint/gemma.ts).
 */
import { isGemma, type ModelConfig } from '../checkpoint/config.js';
import { SiftError } from '../config/errors.js';

/** Why the GPU forward pass cannot serve `config` at `maxContext` tokens, or null when it can. */
export function gpuForwardGap(config: ModelConfig, _maxContext: number): string | null {
  if (isGemma(config.architecture)) {
    return `${config.architecture} is not implemented on the GPU forward pass yet (the reference forward pass runs it)`;
  }
  return null;
}

/** Throws CHECKPOINT_UNSUPPORTED when gpuForwardGap finds a gap. */
export function assertGpuForward(config: ModelConfig, maxContext: number, source: string): void {
  const gap = gpuForwardGap(config, maxContext);
  if (gap) throw new SiftError('CHECKPOINT_UNSUPPORTED', `${source}: ${gap}`);
}
