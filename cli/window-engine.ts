/**
 * Shared by `sift calibrate` and `sift imatrix`, which both run a calibration text through the model in windows:
 * their text-window flags and the dense one-sequence engine sized for one window.
 */
import type { ModelConfig } from '../checkpoint/config.js';
import { attentionConfig } from '../config/attention.js';
import { engineConfig } from '../config/engine.js';
import { SiftError } from '../config/errors.js';
import { intFlag } from '../config/flags.js';
import { KvStorage } from '../model/kv-storage.js';
import { ModelRunner } from '../model/runner.js';
import type { Gpu } from '../shaders/runtime.js';

/** parseArgs definitions of the text-window flags (their help lines stay with each command). */
export const WINDOW_FLAG_DEFS = {
  'max-tokens': { type: 'string' },
  window: { type: 'string' },
  chunk: { type: 'string' },
} as const;

export interface WindowFlags {
  /** --window: tokens per window (undefined: the model's context). */
  windowTokens?: number;
  /** --chunk: tokens per forward chunk (undefined: 64). */
  chunkTokens?: number;
  /** --max-tokens: tokens of the text to use (Infinity: all). */
  maxTokens: number;
}

/** The text-window flags from parsed values, checked as whole numbers >= 1. */
export function windowFlags(values: Record<string, unknown>): WindowFlags {
  const opt = (name: 'window' | 'chunk' | 'max-tokens', dflt: number) =>
    values[name] === undefined ? undefined : intFlag(String(values[name]), name, dflt, 1);
  return {
    windowTokens: opt('window', 0),
    chunkTokens: opt('chunk', 64),
    maxTokens: opt('max-tokens', 0) ?? Number.POSITIVE_INFINITY,
  };
}

/** The window in tokens: `given` (--window) or the model's context, never past it. */
export function windowTokensFor(c: ModelConfig, given: number | undefined): number {
  const ctx = c.maxPositionEmbeddings;
  const win = given ?? ctx;
  if (win > ctx) {
    throw new SiftError('INVALID_ARGUMENT', `--window ${win} exceeds the model's context ${ctx}`, { param: 'window' });
  }
  return win;
}

/**
 * A dense engine for the model in `dir` (its config `c`) sized for one window of `win` tokens: one sequence, every
 * head a retrieval head, dense prefill in chunks of `chunkTokens` (default 64), pages for the window.
 */
export async function loadWindowEngine(
  dir: string,
  c: ModelConfig,
  win: number,
  chunkTokens: number | undefined,
  gpu?: Gpu,
): Promise<ModelRunner> {
  const pageSize = 16;
  const cfg = engineConfig({
    flags: {
      maxBatchTokens: chunkTokens ?? 64,
      maxSeqs: 1,
      pageSize,
      maxContext: win,
      kvCacheMib: Math.max(1, Math.ceil((KvStorage.bytesPerTokenOf(c) * (win + pageSize)) / 2 ** 20) + 1),
    },
  });
  const attention = attentionConfig({ flags: { mode: 'dense', prefillMode: 'dense' } }, pageSize);
  return ModelRunner.load(dir, cfg, { gpu, attention });
}
