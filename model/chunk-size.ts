/**
 * The prefill chunk (the engine's maxBatchTokens: most new tokens in one forward pass), chosen from memory.
 *
 * A longer chunk prefills a long prompt in fewer steps: each step re-reads the prompt's K/V so far once per query
 * tile, and the tiled GEMM reads each weight once per 64 tokens, so chunks below a few hundred tokens waste both; but
 * a step's activations grow with it, and a decode sharing the step waits for the whole chunk. `auto` takes the most
 * tokens, in multiples of CHUNK_ALIGN up to AUTO_MAX_CHUNK (vLLM's default token budget for chunked prefill), such
 * that
 *   - the step's activations (ForwardPass's buffers, per token: residual, norm and projection rows, q/k/v, attention
 *     output, the three FFN rows, ids/positions/rows) fit the activation budget (--activation-mib), and
 *   - the largest of them, T x max(hidden, q heads x headDim, intermediate) f32, fits one storage binding and one
 *     buffer of the device (lavapipe: 128 MiB per binding).
 * WebGPU reports no free memory, so the budget is the user's; the KV cache has its own (--kv-cache-mib).
 */
import type { ModelConfig } from '../checkpoint/config.js';
import { SiftError } from '../config/errors.js';

/** Auto chunks are multiples of this (a key block, a GEMM tile, a query tile of every layout). */
export const CHUNK_ALIGN = 64;
/** Most tokens an auto chunk takes. */
export const AUTO_MAX_CHUNK = 2048;

export interface ChunkChoice {
  /** Tokens per forward pass. */
  tokens: number;
  /** Chosen by the rule above (false: --max-batch-tokens). */
  auto: boolean;
  /** Activation bytes of one step of `tokens` tokens (ForwardPass's per-token buffers). */
  activationBytes: number;
  /** What bounded an auto choice: 'cap', 'activation budget', 'binding' or 'context'. */
  limit: string;
}

/** Activation bytes per token of a forward pass (model/forward.ts's (T, ...) buffers, f32 and u32). */
export function activationBytesPerToken(c: ModelConfig): number {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  // h, xn, proj (hidden); q, attn (q heads); k, v (KV heads); gate, up, act (intermediate); ids, pos, seq (u32)
  return 4 * (3 * c.hiddenSize + 2 * q + 2 * kv + 3 * c.intermediateSize + 3);
}

/**
 * The prefill chunk: `maxBatchTokens` when given, else the auto rule (file comment) for a context of `maxContext`
 * tokens (no chunk longer than the context).
 */
export function prefillChunk(
  c: ModelConfig,
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number },
  o: { maxBatchTokens: number | null; activationMib: number; maxContext: number },
): ChunkChoice {
  const perToken = activationBytesPerToken(c);
  if (o.maxBatchTokens !== null) {
    return { tokens: o.maxBatchTokens, auto: false, activationBytes: o.maxBatchTokens * perToken, limit: 'flag' };
  }
  const widest = 4 * Math.max(c.hiddenSize, c.numHeads * c.headDim, c.intermediateSize);
  const bounds: [string, number][] = [
    ['cap', AUTO_MAX_CHUNK],
    ['activation budget', Math.floor((o.activationMib * 2 ** 20) / perToken)],
    ['binding', Math.floor(Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize) / widest)],
    ['context', Math.ceil(o.maxContext / CHUNK_ALIGN) * CHUNK_ALIGN],
  ];
  const [limit, most] = bounds.reduce((a, b) => (b[1] < a[1] ? b : a));
  const tokens = most >= CHUNK_ALIGN ? most - (most % CHUNK_ALIGN) : most;
  if (tokens < 1) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `one token's activations (${perToken} bytes) do not fit --activation-mib ${o.activationMib} or a storage binding`,
    );
  }
  return { tokens, auto: true, activationBytes: tokens * perToken, limit };
}

/** The startup log line of a choice. */
export function chunkLine(ch: ChunkChoice, activationMib: number): string {
  const mib = (ch.activationBytes / 2 ** 20).toFixed(1);
  if (!ch.auto) return `prefill chunk: ${ch.tokens} tokens (--max-batch-tokens), activations ${mib} MiB`;
  return (
    `prefill chunk: ${ch.tokens} tokens (auto, bounded by the ${ch.limit}), activations ${mib} MiB of ` +
    `--activation-mib ${activationMib}; --max-batch-tokens N overrides`
  );
}
