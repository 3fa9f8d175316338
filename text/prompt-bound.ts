/**
 * The cheap refusal of a prompt that cannot fit, from its length alone (no tokenizing): no token covers more
 * characters (UTF-16 units) or UTF-8 bytes than the longest vocabulary piece, times what the normalizer may shrink
 * a text. Written once and used wherever a prompt is judged: TextSide (main thread and tokenizer worker) and the
 * big-body parse worker (server/json-worker.ts), so each refuses the same prompts with the same error. Imports
 * nothing heavy: the parse worker loads it without the tokenizer.
 */
import { SiftError } from '../config/errors.js';

/** The tokens a prompt may have (prompt + completion), and how to say what sets that limit. */
export interface PromptLimit {
  maxTokens: number;
  /** e.g. "this model's maximum context length is 256 tokens". */
  describe: string;
  /**
   * Set when the prompt was already found too long where the body was parsed (server/body.ts): the error to throw
   * in place of the length check. The body's prompt texts are then empty stand-ins and must not be tokenized.
   */
  refused?: SiftError;
}

/** What bounds a text's tokens from its length (Tokenizer.lengthBound); plain numbers, so it crosses threads. */
export interface LengthBound {
  /** The longest vocabulary piece (added tokens included) in UTF-16 units and in UTF-8 bytes. */
  pieceChars: number;
  pieceBytes: number;
  /** How far the normalizer may shorten a text (a finite factor >= 1). */
  shrink: number;
}

/** A lower bound on the tokens of any text holding all of `texts`; 0 without a bound (lengths mean nothing). */
export function minTokensOf(texts: readonly string[], bound: LengthBound | null): number {
  if (bound === null) return 0;
  let chars = 0;
  let bytes = 0;
  for (const t of texts) {
    chars += t.length;
    bytes += Buffer.byteLength(t, 'utf8');
  }
  const s = bound.shrink;
  return Math.max(Math.ceil(chars / (bound.pieceChars * s)), Math.ceil(bytes / (bound.pieceBytes * s)));
}

/**
 * CONTEXT_LENGTH_EXCEEDED (naming `param`) when `text` has more than limit.maxTokens - 1 tokens for certain,
 * judged from its length alone: no room would be left to generate. Null when it may fit.
 */
export function promptTooLong(
  text: string,
  param: string,
  limit: PromptLimit,
  bound: LengthBound | null,
): SiftError | null {
  const min = minTokensOf([text], bound);
  if (min + 1 <= limit.maxTokens) return null;
  return new SiftError(
    'CONTEXT_LENGTH_EXCEEDED',
    `${limit.describe}; the prompt has ${text.length} characters, at least ${min} tokens, and leaves no room to generate`,
    { param },
  );
}
