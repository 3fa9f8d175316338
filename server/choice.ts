/**
 * One choice of a generation request: a submitted engine request read through a TextStream (text/stream.ts), which
 * detokenizes, matches stop strings and holds back what could begin one. A matched stop string cancels the engine
 * request and finishes the choice with "stop". Yields text deltas with the logprobs of the tokens whose text they
 * carry, then one finish.
 */
import { isSiftError, SiftError } from '../config/errors.js';
import type {
  AttentionUsage,
  FinishReason,
  GenerationRequest,
  RequestHandle,
  RequestUsage,
  TokenLogprob,
} from '../engine/client.js';
import type { TextDelta, TextStream } from '../text/stream.js';
import type { TextSide } from '../text/text.js';
import type { FinishReasonWire } from './protocol.js';

/**
 * The finish reason sent for an engine finish. 'error' and 'shutdown' (without a matched stop string) are answered
 * with errors instead and never get here; 'cancelled' is "abort".
 */
export function wireFinish(reason: FinishReason, stopString: boolean): FinishReasonWire {
  if (stopString || reason === 'stop') return 'stop';
  if (reason === 'length') return 'length';
  if (reason === 'timeout') return 'timeout';
  return 'abort';
}

/** A generated token with its logprob information, as the wire formats need it. */
export interface TokenInfo {
  id: number;
  /** The token's text (vocabulary piece, SentencePiece "▁" as a space). */
  token: string;
  logprob: number;
  top: Array<{ token: string; logprob: number }>;
  /** Character offset of this token's text in the choice's text. */
  offset: number;
}

export type ChoiceUpdate =
  | { type: 'delta'; text: string; tokens: TokenInfo[] }
  | { type: 'finish'; reason: FinishReasonWire };

/** What a finished choice reports. */
export interface ChoiceResult {
  text: string;
  tokens: TokenInfo[];
  finishReason: FinishReasonWire;
  /** The engine's own finish reason ('cancelled' after a stop string matched). */
  engineFinish: FinishReason;
  usage: RequestUsage;
  attention: AttentionUsage;
  /** Server-side milliseconds from request arrival to this choice's first token / end. */
  ttftMs: number | null;
  e2eMs: number;
}

export class Choice {
  readonly index: number;
  private readonly stream: TextStream;
  /** The sampled tokens' logprob data, in push order (only when logprobs were asked for). */
  private readonly sampled: Array<{ id: number; logprob: number; top: TokenLogprob[] }> = [];
  private readonly tokens: TokenInfo[] = [];
  private firstTokenAt: number | null = null;
  result: ChoiceResult | null = null;

  constructor(
    readonly handle: RequestHandle,
    readonly req: GenerationRequest,
    index: number,
    private readonly text: TextSide,
    stops: readonly string[],
    private readonly startedAt: number,
    private readonly wantLogprobs: boolean,
  ) {
    this.index = index;
    this.stream = text.stream(req.promptIds, stops);
  }

  /** Runs the choice to its end. `onProgress` sees prefill progress (for keep-alives). */
  async *updates(onProgress?: () => void): AsyncGenerator<ChoiceUpdate> {
    for await (const ev of this.handle) {
      if (ev.type === 'progress') {
        onProgress?.();
        continue;
      }
      if (ev.type === 'token') {
        this.firstTokenAt ??= performance.now();
        if (this.stream.stopped) continue;
        if (this.wantLogprobs) this.sampled.push({ id: ev.id, logprob: ev.logprob ?? 0, top: ev.topLogprobs ?? [] });
        const d = this.delta(this.stream.push(ev.id));
        // A stop string matched: the text is complete, the engine need not go on.
        if (this.stream.stopped) this.handle.cancel();
        if (d) yield d;
        continue;
      }
      // done
      if (ev.finishReason === 'error') {
        const err = ev.error;
        throw isSiftError(err) ? err : new SiftError('INTERNAL', err?.message ?? 'generation failed', { cause: err });
      }
      if (ev.finishReason === 'shutdown' && !this.stream.stopped) {
        throw new SiftError('SHUTTING_DOWN', 'the server shut down before this request finished');
      }
      const d = this.delta(this.stream.finish());
      if (d) yield d;
      const reason = wireFinish(ev.finishReason, this.stream.stopped);
      this.result = {
        text: this.stream.text,
        tokens: this.tokens,
        finishReason: reason,
        engineFinish: ev.finishReason,
        usage: ev.usage,
        attention: ev.attention,
        ttftMs: this.firstTokenAt === null ? null : this.firstTokenAt - this.startedAt,
        e2eMs: performance.now() - this.startedAt,
      };
      yield { type: 'finish', reason };
      return;
    }
    throw new SiftError('INTERNAL', 'the engine ended a request without a done event');
  }

  /** The update for a TextStream delta, with the logprob entries of the tokens it completes. */
  private delta(d: TextDelta): ChoiceUpdate | null {
    if (!d.text && !d.tokens) return null;
    const out: TokenInfo[] = [];
    if (this.wantLogprobs) {
      const tok = this.text.tokenizer;
      const offsets = this.stream.tokenOffsets;
      for (let i = this.tokens.length; i < this.tokens.length + d.tokens; i++) {
        const t = this.sampled[i];
        out.push({
          id: t.id,
          token: tok.tokenText(t.id),
          logprob: t.logprob,
          top: t.top.map((a) => ({ token: tok.tokenText(a.id), logprob: a.logprob })),
          offset: offsets[i],
        });
      }
      this.tokens.push(...out);
    }
    return { type: 'delta', text: d.text, tokens: out };
  }
}
