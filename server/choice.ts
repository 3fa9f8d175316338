/**
 * One choice of a generation request: a submitted engine request plus its text side. Token ids are
 * detokenized as they arrive; stop strings are matched on the text (the stop string is not included, the engine
 * request is cancelled, finish reason "stop"); while stop strings are set, the last (longest stop - 1) characters
 * are held back so no part of a stop string is ever streamed. Yields text deltas with the logprobs of the tokens
 * whose text they carry, then one finish.
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
import type { TextSide } from '../text/text.js';
import type { FinishReasonWire } from './protocol.js';

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

/** The token's text as OpenAI reports it in logprobs. */
export function tokenString(text: TextSide, id: number): string {
  const tok = text.tokenizer;
  const piece = tok.idToToken(id);
  if (piece === null) return '';
  const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  if (byte) return String.fromCharCode(Number.parseInt(byte[1], 16));
  if (piece.includes('\u2581')) return piece.replace(/\u2581/g, ' ');
  return tok.decode([id], { skipSpecial: false });
}

export class Choice {
  readonly index: number;
  private readonly decoder;
  private readonly holdBack: number;
  private produced = '';
  private emitted = 0;
  private readonly tokens: TokenInfo[] = [];
  private released = 0;
  private stopped = false;
  private firstTokenAt: number | null = null;
  result: ChoiceResult | null = null;

  constructor(
    readonly handle: RequestHandle,
    readonly req: GenerationRequest,
    index: number,
    private readonly text: TextSide,
    private readonly stops: readonly string[],
    private readonly startedAt: number,
    private readonly wantLogprobs: boolean,
  ) {
    this.index = index;
    this.decoder = text.streamDecoder(req.promptIds);
    this.holdBack = stops.reduce((m, s) => Math.max(m, s.length), 0) - 1;
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
        if (this.stopped) continue;
        this.push(ev.id, ev.logprob, ev.topLogprobs);
        const d = this.take(false);
        if (d) yield d;
        continue;
      }
      // done
      if (!this.stopped && ev.finishReason !== 'error') this.append(this.decoder.flush());
      const d = this.take(true);
      if (d) yield d;
      if (ev.finishReason === 'error') {
        const err = ev.error;
        throw isSiftError(err) ? err : new SiftError('INTERNAL', err?.message ?? 'generation failed', { cause: err });
      }
      const reason: FinishReasonWire = this.stopped || ev.finishReason === 'stop' ? 'stop' : 'length';
      this.result = {
        text: this.produced,
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

  private push(id: number, logprob: number | undefined, top: TokenLogprob[] | undefined): void {
    const offset = this.produced.length;
    if (this.wantLogprobs) {
      this.tokens.push({
        id,
        token: tokenString(this.text, id),
        logprob: logprob ?? 0,
        top: (top ?? []).map((t) => ({ token: tokenString(this.text, t.id), logprob: t.logprob })),
        offset,
      });
    }
    this.append(this.decoder.push(id));
  }

  private append(piece: string): void {
    if (!piece || this.stopped) return;
    const before = this.produced.length;
    this.produced += piece;
    let hit = -1;
    for (const s of this.stops) {
      if (!s) continue;
      const i = this.produced.indexOf(s, Math.max(0, before - s.length + 1));
      if (i !== -1 && (hit === -1 || i < hit)) hit = i;
    }
    if (hit !== -1) {
      this.produced = this.produced.slice(0, hit);
      this.stopped = true;
      this.handle.cancel();
      // Tokens whose text starts at or after the stop string are not part of the answer.
      while (this.tokens.length > this.released && this.tokens[this.tokens.length - 1].offset >= hit) this.tokens.pop();
    }
  }

  /** The text (and tokens) that may be sent now; everything on `final` or after a stop. */
  private take(final: boolean): ChoiceUpdate | null {
    const all = final || this.stopped;
    const end = all ? this.produced.length : Math.max(this.emitted, this.produced.length - Math.max(0, this.holdBack));
    const text = this.produced.slice(this.emitted, end);
    this.emitted = end;
    let upto = this.released;
    while (upto < this.tokens.length && (all || this.tokens[upto].offset < end)) upto++;
    const tokens = this.tokens.slice(this.released, upto);
    this.released = upto;
    if (!text && !tokens.length) return null;
    return { type: 'delta', text, tokens };
  }
}
