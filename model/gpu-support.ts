/**
 * What the GPU forward pass does not run yet, decided once at load: a model that needs it is refused with
 * CHECKPOINT_UNSUPPORTED naming the feature, never served with the feature silently dropped. The plain-TS reference
 * (tests/reference/forward.ts) implements all of them.
 * Today every architecture checkpoint/config.ts accepts runs on the GPU (Gemma 2/3 included: GeGLU, (1 + w) norms
 * folded into the uploaded weights, sandwich norms, scaled embeddings, soft-caps, per-layer RoPE), so nothing is
 * refused; a feature the reference gains before the kernels do is refused here by name.
 */
import type { ModelConfig } from '../checkpoint/config.js';
import { SiftError } from '../config/errors.js';

/** Why the GPU forward pass cannot serve `config` at `maxContext` tokens, or null when it can. */
export function gpuForwardGap(_config: ModelConfig, _maxContext: number): string | null {
  return null;
}

/** Throws CHECKPOINT_UNSUPPORTED when gpuForwardGap finds a gap. */
export function assertGpuForward(config: ModelConfig, maxContext: number, source: string): void {
  const gap = gpuForwardGap(config, maxContext);
  if (gap) throw new SiftError('CHECKPOINT_UNSUPPORTED', `${source}: ${gap}`);
}
