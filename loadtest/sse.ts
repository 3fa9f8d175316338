/**
 * Incremental reader and checker of an OpenAI streaming response (Server-Sent Events). Fed the body as it arrives,
 * with the time each piece arrived; keeps the arrival time of every content delta and the first way in which the
 * stream is not a well-formed, complete completion:
 *   - every `data:` payload other than `[DONE]` parses as JSON with a `choices` array of the right object type;
 *   - chat: the first chunk with a choice carries `delta.role`; content deltas are strings;
 *   - exactly one finish_reason, and no content after it;
 *   - a usage chunk (prompt_tokens, completion_tokens) when stream_options.include_usage was asked for, and
 *     usage.completion_tokens >= the number of content deltas;
 *   - `data: [DONE]` last, nothing after it.
 * An `{"error": ...}` payload in the stream is reported as a stream error, not as malformed.
 */

export type Api = 'chat' | 'completions';

export interface StreamUsage {
  promptTokens: number;
  completionTokens: number;
  /** usage.prompt_tokens_details.cached_tokens: prompt tokens the server's prefix cache supplied; null if absent. */
  cachedTokens: number | null;
  /** sift's usage.attention.mode: the decode attention that ran ("dense" or "sparse"); null from other servers. */
  attentionRan: string | null;
}

export interface StreamVerdict {
  /** null when the stream was a well-formed complete completion. */
  malformed: string | null;
  /** Message of an `{"error": ...}` payload sent inside the stream, if any. */
  streamError: string | null;
  /** Arrival times (ms, caller's clock) of the SSE events that carried non-empty content, in order. */
  contentTimes: number[];
  /** Characters of content received. */
  contentChars: number;
  finishReason: string | null;
  usage: StreamUsage | null;
  /** Arrival time of `data: [DONE]`; null when it never came. */
  doneTime: number | null;
}

const clip = (s: string, n = 120) => (s.length > n ? `${s.slice(0, n)}...` : s);

export class SseCompletionReader {
  private buf = '';
  private dataLines: string[] = [];
  private sawChoice = false;
  private finishCount = 0;
  private malformed: string | null = null;
  private streamError: string | null = null;
  private readonly contentTimes: number[] = [];
  private contentChars = 0;
  private finishReason: string | null = null;
  private usage: StreamUsage | null = null;
  private doneTime: number | null = null;

  constructor(
    private readonly api: Api,
    private readonly expectUsage: boolean,
  ) {}

  /** Feeds the next piece of the body, received at time `t` (ms). */
  feed(text: string, t: number): void {
    this.buf += text;
    let nl = this.buf.indexOf('\n');
    while (nl >= 0) {
      let line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      this.line(line, t);
      nl = this.buf.indexOf('\n');
    }
  }

  /** Ends the stream (the response ended) and returns what it was. */
  finish(t: number): StreamVerdict {
    if (this.buf.length > 0) {
      // A last line without its newline still counts; the event it belongs to is dispatched at the end.
      this.line(this.buf.endsWith('\r') ? this.buf.slice(0, -1) : this.buf, t);
      this.buf = '';
    }
    if (this.dataLines.length > 0) this.dispatch(t);
    if (!this.malformed && !this.streamError) {
      if (this.doneTime === null) this.fail('stream ended before data: [DONE]');
      else if (!this.sawChoice) this.fail('no chunk with a choice');
      else if (this.finishCount === 0) this.fail('no finish_reason');
      else if (this.expectUsage && !this.usage)
        this.fail('no usage chunk although stream_options.include_usage was set');
      else if (this.usage && this.usage.completionTokens < this.contentTimes.length) {
        this.fail(
          `usage.completion_tokens ${this.usage.completionTokens} < ${this.contentTimes.length} content deltas`,
        );
      }
    }
    return {
      malformed: this.malformed,
      streamError: this.streamError,
      contentTimes: this.contentTimes,
      contentChars: this.contentChars,
      finishReason: this.finishReason,
      usage: this.usage,
      doneTime: this.doneTime,
    };
  }

  private fail(why: string): void {
    if (this.malformed === null) this.malformed = why;
  }

  private line(line: string, t: number): void {
    if (line === '') {
      if (this.dataLines.length > 0) this.dispatch(t);
      return;
    }
    if (line.startsWith(':')) return; // comment / keep-alive
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.dataLines.push(value);
    // event:, id:, retry: carry nothing an OpenAI stream needs.
  }

  private dispatch(t: number): void {
    const data = this.dataLines.join('\n');
    this.dataLines = [];
    if (this.doneTime !== null) {
      this.fail(`data after [DONE]: ${clip(data)}`);
      return;
    }
    if (data === '[DONE]') {
      this.doneTime = t;
      return;
    }
    let obj: unknown;
    try {
      obj = JSON.parse(data);
    } catch {
      this.fail(`SSE data is not JSON: ${clip(data)}`);
      return;
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
      this.fail(`SSE data is not a JSON object: ${clip(data)}`);
      return;
    }
    const o = obj as Record<string, unknown>;
    if (o.error !== undefined && o.error !== null) {
      const e = o.error as { message?: unknown };
      if (this.streamError === null)
        this.streamError = typeof e.message === 'string' ? e.message : clip(JSON.stringify(o.error));
      return;
    }
    const want = this.api === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    if (o.object !== want) this.fail(`chunk object is ${JSON.stringify(o.object)}, expected "${want}"`);
    if (!Array.isArray(o.choices)) {
      this.fail('chunk has no choices array');
      return;
    }
    if (o.usage !== undefined && o.usage !== null) {
      const u = o.usage as Record<string, unknown>;
      if (typeof u.prompt_tokens !== 'number' || typeof u.completion_tokens !== 'number') {
        this.fail(`usage without numeric prompt_tokens/completion_tokens: ${clip(JSON.stringify(o.usage))}`);
      } else {
        const details = u.prompt_tokens_details as Record<string, unknown> | null | undefined;
        const att = u.attention as { mode?: unknown } | undefined;
        const cached = details?.cached_tokens;
        this.usage = {
          promptTokens: u.prompt_tokens,
          completionTokens: u.completion_tokens,
          cachedTokens: typeof cached === 'number' ? cached : null,
          attentionRan: typeof att?.mode === 'string' ? att.mode : null,
        };
      }
    }
    let content = '';
    for (const ch of o.choices as unknown[]) {
      if (typeof ch !== 'object' || ch === null) {
        this.fail('choice is not an object');
        continue;
      }
      const c = ch as Record<string, unknown>;
      let piece: unknown;
      if (this.api === 'chat') {
        const delta = c.delta as Record<string, unknown> | undefined;
        if (typeof delta !== 'object' || delta === null) {
          this.fail('chat chunk choice without a delta object');
          continue;
        }
        if (!this.sawChoice && delta.role !== 'assistant') this.fail('first chunk has no delta.role "assistant"');
        piece = delta.content;
      } else {
        piece = c.text;
      }
      this.sawChoice = true;
      if (piece !== undefined && piece !== null && typeof piece !== 'string')
        this.fail('content delta is not a string');
      else if (typeof piece === 'string' && piece.length > 0) {
        if (this.finishCount > 0) this.fail('content after finish_reason');
        content += piece;
      }
      if (c.finish_reason !== undefined && c.finish_reason !== null) {
        if (typeof c.finish_reason !== 'string') this.fail('finish_reason is not a string');
        this.finishCount++;
        if (this.finishCount > 1) this.fail('more than one finish_reason');
        this.finishReason = String(c.finish_reason);
      }
    }
    if (content.length > 0) {
      this.contentTimes.push(t);
      this.contentChars += content.length;
    }
  }
}
