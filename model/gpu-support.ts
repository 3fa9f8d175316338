/**
 * What the GPU forward pass does not run yet, decided once at load: a model that needs it is refused with
 * CHECKPOINT_UNSUPPORTED naming the feature, never served with the feature silently dropped. The plain-TS reference
 * (tests/reference/forward.ts) implements all of them.
 *   - a sliding attention window shorter than the served context (a window at least as long as the context masks
 *     nothing, so such a model runs exactly).
 */
import type { ModelConfig } from '../checkpoint/config.js';
import { SiftError } from '../config/errors.js';

/** Why the GPU forward pass cannot serve `config` at `maxContext` tokens, or null when it can. */
export function gpuForwardGap(config: ModelConfig, maxContext: number): string | null {
  const windows = config.layerWindows.filter((w) => w > 0);
  if (windows.length > 0 && Math.min(...windows) < maxContext) {
    const w = Math.min(...windows);
    return (
      `sliding-window attention (window ${w} in ${windows.length} of ${config.numLayers} layers) is not implemented ` +
      `on the GPU yet; serve at most ${w} tokens of context (--max-context ${w}) to run it exactly`
    );
  }
  return null;
}

/** Throws CHECKPOINT_UNSUPPORTED when gpuForwardGap finds a gap. */
export function assertGpuForward(config: ModelConfig, maxContext: number, source: string): void {
  const gap = gpuForwardGap(config, maxContext);
  if (gap) throw new SiftError('CHECKPOINT_UNSUPPORTED', `${source}: ${gap}`);
}
