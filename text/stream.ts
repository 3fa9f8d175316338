/**
 * TextStream: the generated token ids of one completion -> the text a reader may be shown, as the ids arrive.
 * Used by the server (every choice, streamed or not, chat and completions) and by `sift generate` (terminal and
 * --json), so every caller cuts the same text.
 *
 * - Detokenizes incrementally (Tokenizer.createStreamDecoder), with the prompt as context so the first word keeps
 *   its leading space; an incomplete UTF-8 sequence is held until it completes.
 * - Stop strings are matched on the text: the completion ends right before the earliest one (which is not part of
 *   it), and later ids are ignored. While stop strings are set, the last (longest stop - 1) characters are held
 *   back, so no prefix of a stop string is ever released before the text shows whether the stop string follows.
 * - Counts tokens with the text: a token is released with the delta that carries the first character of its
 *   text (tokens with no text of their own go with the next delta), and tokens whose text starts at or after a
 *   stop string are dropped, so per-token data (logprobs) lines up with the text sent.
 */
import type { StreamDecoder, Tokenizer } from './tokenizer.js';

/** What one push or finish releases. */
export interface TextDelta {
  /** Text that may be shown now ('' while everything new is held back). */
  text: string;
  /** How many more generated tokens (in push order) this text completes. */
  tokens: number;
}

export interface TextStreamOptions {
  /** The prompt's ids: context for the first generated word (not part of the text). */
  context?: readonly number[];
  /** Stop strings ('' entries are ignored). */
  stop?: readonly string[];
}

const NOTHING: TextDelta = Object.freeze({ text: '', tokens: 0 });

export class TextStream {
  private readonly decoder: StreamDecoder;
  private readonly stops: string[];
  private readonly holdBack: number;
  /** All text decoded so far, cut at the stop string once one matched. */
  private produced = '';
  /** produced[0, released) has been handed out. */
  private released = 0;
  /** Start offset in `produced` of each kept token's text. */
  private readonly starts: number[] = [];
  private releasedTokens = 0;
  private stoppedFlag = false;
  private finished = false;

  constructor(tokenizer: Tokenizer, opts: TextStreamOptions = {}) {
    // Context ids the tokenizer does not know (a model vocab padded past the tokenizer's) only lose their spacing.
    const context = (opts.context ?? []).filter((id) => tokenizer.idToToken(id) !== null);
    this.decoder = tokenizer.createStreamDecoder({ context });
    this.stops = (opts.stop ?? []).filter((s) => s !== '');
    this.holdBack = Math.max(0, ...this.stops.map((s) => s.length - 1));
  }

  /** True once a stop string matched: the text is complete and further ids are ignored. */
  get stopped(): boolean {
    return this.stoppedFlag;
  }

  /** The completion's text so far (everything released plus what is held back; final after finish or a stop). */
  get text(): string {
    return this.produced;
  }

  /** Character offset in `text` at which each kept token's text starts, in push order. */
  get tokenOffsets(): readonly number[] {
    return this.starts;
  }

  /** Adds one generated id; returns what may be shown now. */
  push(id: number): TextDelta {
    if (this.stoppedFlag || this.finished) return NOTHING;
    this.starts.push(this.produced.length);
    this.append(this.decoder.push(id));
    return this.take(this.stoppedFlag);
  }

  /** The completion ended: releases everything held back (an incomplete UTF-8 tail decodes to U+FFFD). */
  finish(): TextDelta {
    if (this.finished) return NOTHING;
    if (!this.stoppedFlag) this.append(this.decoder.flush());
    this.finished = true;
    return this.take(true);
  }

  private append(piece: string): void {
    if (!piece) return;
    const before = this.produced.length;
    this.produced += piece;
    let hit = -1;
    for (const s of this.stops) {
      // Only a match that ends inside the new piece is new.
      const i = this.produced.indexOf(s, Math.max(0, before - s.length + 1));
      if (i !== -1 && (hit === -1 || i < hit)) hit = i;
    }
    if (hit === -1) return;
    this.produced = this.produced.slice(0, hit);
    this.stoppedFlag = true;
    // Text before `hit` may still be unreleased (held back), never text after it: drop tokens that start there.
    while (this.starts.length > this.releasedTokens && this.starts[this.starts.length - 1] >= hit) this.starts.pop();
  }

  private take(all: boolean): TextDelta {
    const end = all ? this.produced.length : Math.max(this.released, this.produced.length - this.holdBack);
    const text = this.produced.slice(this.released, end);
    this.released = end;
    let upto = this.releasedTokens;
    while (upto < this.starts.length && (all || this.starts[upto] < end)) upto++;
    const tokens = upto - this.releasedTokens;
    this.releasedTokens = upto;
    return text || tokens ? { text, tokens } : NOTHING;
  }
}
