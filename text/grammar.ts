/**
 * Constrained JSON output over a model's vocabulary: a JSON schema (or "any JSON object") compiled by xgrammar
 * (text/xgrammar.ts) into a grammar whose matcher gives, at every step, the bitmask of the tokens that keep the
 * output a prefix of a document the schema accepts; the engine samples within it (engine/client.ts
 * TokenConstraint). Output is compact JSON on one line with ", " and ": " separators.
 *
 * Closing in time: a request has a token limit, and text that stops at the limit would not parse. The closing walk
 * is a greedy way out from any state (the grammar's forced text as the longest tokens; then '"' inside a string;
 * '}', ']', ',', '"', '0', ... outside one), measured on the matcher and rolled back. Near the limit every sampled
 * token is reviewed: if the walk after it no longer fits the tokens left, the constraint takes the walk instead,
 * one forced token per step, ending with a stop id. The answer is a complete document (values near the end cut
 * short) rather than a truncated one. A request whose limit is below the walk from the start (minTokens) cannot be
 * served; the server refuses it.
 */
import { SiftError } from '../config/errors.js';
import type { Tokenizer } from './tokenizer.js';
import { type XgCompiledGrammar, type XgGrammarCompiler, type XgGrammarMatcher, xgrammar } from './xgrammar.js';

/** Characters the closing walk prefers, in order, outside and inside a JSON string. */
const CLOSE_OUTSIDE = ['}', ']', ',', '"', '0', 'n', 'f', 't', '[', '{', ':', '1', '-', '.', 'e'];
const CLOSE_INSIDE = ['"', 'a', '0', '\\'];
/** Review every sampled token when this few are left (or 4x the shortest document plus WINDOW, if more). */
const REVIEW_FROM = 64;
/** Also review when the tokens left come within this many of the last estimate of the closing walk. */
const WINDOW = 24;

/** Whether byte `b` may start a UTF-8 sequence (ASCII or a lead byte of a well-formed sequence). */
function utf8Lead(b: number): boolean {
  return b < 0x80 || (b >= 0xc2 && b <= 0xf4);
}

/** The tokenizer.json decoder's vocabulary type, as xgrammar names it. */
function vocabType(tokenizer: Tokenizer): 'byte_fallback' | 'byte_level' | 'raw' {
  const dec = JSON.stringify(tokenizer.decoderJson ?? null);
  if (dec.includes('ByteFallback')) return 'byte_fallback';
  if (dec.includes('ByteLevel')) return 'byte_level';
  return 'raw';
}

/** Per model: the vocabulary prepared for xgrammar once, a compiler with a cache of compiled grammars. */
export class Grammars {
  private compiler: Promise<XgGrammarCompiler> | null = null;
  /** Single-character text -> a token id whose text is exactly it. */
  private charTokens: Map<string, number> | null = null;
  /** Token text -> the lowest id with that text (non-special), and the longest text. */
  private textTokens: { ids: Map<string, number>; maxLen: number } | null = null;
  /** Tokens whose text has no control character (U+0000-U+001F), as a mask. */
  private cleanMask: Int32Array | null = null;
  /** Byte-fallback pieces ("<0x41>"): id -> byte. */
  private byteIds: Map<number, number> | null = null;

  constructor(
    private readonly tokenizer: Tokenizer,
    /** Ids that end generation; the grammar allows them once a document is complete. */
    private readonly stopIds: readonly number[],
    /** Logits row length (the model's vocabulary, which may be padded past the tokenizer's). */
    private readonly vocabSize: number = tokenizer.vocabSize,
  ) {}

  private getCompiler(): Promise<XgGrammarCompiler> {
    this.compiler ??= (async () => {
      const xg = xgrammar();
      const vocab: string[] = [];
      for (let id = 0; id < this.tokenizer.vocabSize; id++) vocab.push(this.tokenizer.idToToken(id) ?? '');
      const info = await xg.TokenizerInfo.createTokenizerInfo(vocab, vocabType(this.tokenizer), false, this.vocabSize, [
        ...this.stopIds,
      ]);
      return xg.GrammarCompiler.createGrammarCompiler(info, true);
    })();
    return this.compiler;
  }

  private texts(): { ids: Map<string, number>; maxLen: number } {
    if (this.textTokens) return this.textTokens;
    const ids = new Map<string, number>();
    let maxLen = 0;
    for (let id = 0; id < this.tokenizer.vocabSize; id++) {
      if (this.tokenizer.specialIds.has(id)) continue;
      const t = this.tokenizer.tokenText(id);
      if (!t || ids.has(t)) continue;
      ids.set(t, id);
      maxLen = Math.max(maxLen, t.length);
    }
    this.textTokens = { ids, maxLen };
    return this.textTokens;
  }

  /**
   * Compact JSON never has a raw control character (escaped in strings, no newlines or tabs between tokens), but
   * xgrammar's strings with minLength / maxLength admit them; this mask, and-ed into every step's, keeps them out.
   */
  private clean(): Int32Array {
    if (this.cleanMask) return this.cleanMask;
    const m = new Int32Array(Math.ceil(this.vocabSize / 32)).fill(-1);
    for (let id = 0; id < this.tokenizer.vocabSize; id++) {
      if (this.tokenizer.specialIds.has(id)) continue;
      // biome-ignore lint/suspicious/noControlCharactersInRegex: the control characters are what it looks for
      if (/[\u0000-\u001f]/.test(this.tokenizer.tokenText(id))) m[id >> 5] &= ~(1 << (id & 31));
    }
    this.cleanMask = m;
    return m;
  }

  private bytePieces(): Map<number, number> {
    if (this.byteIds) return this.byteIds;
    const m = new Map<number, number>();
    if (vocabType(this.tokenizer) === 'byte_fallback') {
      for (let id = 0; id < this.tokenizer.vocabSize; id++) {
        const b = /^<0x([0-9A-Fa-f]{2})>$/.exec(this.tokenizer.idToToken(id) ?? '');
        if (b) m.set(id, Number.parseInt(b[1], 16));
      }
    }
    this.byteIds = m;
    return m;
  }

  private closers(): Map<string, number> {
    if (this.charTokens) return this.charTokens;
    const wanted = new Set([...CLOSE_OUTSIDE, ...CLOSE_INSIDE]);
    const m = new Map<string, number>();
    for (let id = 0; id < this.tokenizer.vocabSize; id++) {
      if (this.tokenizer.specialIds.has(id)) continue;
      const t = this.tokenizer.tokenText(id);
      if (!wanted.has(t)) continue;
      // prefer a text piece to a byte-fallback piece of the same character
      const piece = this.tokenizer.idToToken(id) ?? '';
      if (!m.has(t) || /^<0x[0-9A-Fa-f]{2}>$/.test(this.tokenizer.idToToken(m.get(t) as number) ?? '')) {
        if (!m.has(t) || !/^<0x/.test(piece)) m.set(t, id);
      }
    }
    this.charTokens = m;
    return m;
  }

  /**
   * A constraint for one request: output that `schema` accepts (a JSON schema inside the subset of
   * text/json-schema.ts, checked by the caller), or any JSON object when `schema` is null.
   */
  async constraint(schema: Record<string, unknown> | null): Promise<JsonConstraint> {
    if (this.stopIds.length === 0) {
      throw new SiftError('INVALID_ARGUMENT', 'constrained output needs a model with an end-of-sequence token');
    }
    const compiler = await this.getCompiler();
    const source = schema === null ? '{"type": "object"}' : JSON.stringify(schema);
    let compiled: XgCompiledGrammar;
    try {
      compiled = await compiler.compileJSONSchema(source, false, -1, [', ', ': '], schema !== null);
    } catch (e) {
      throw new SiftError('INVALID_ARGUMENT', `the JSON schema cannot be compiled: ${(e as Error).message ?? e}`, {
        cause: e,
      });
    }
    const matcher = await xgrammar().GrammarMatcher.createGrammarMatcher(compiled, [...this.stopIds], false);
    const c = new JsonConstraint(
      matcher,
      this.tokenizer,
      this.stopIds,
      this.closers(),
      this.texts(),
      this.clean(),
      this.bytePieces(),
      this.vocabSize,
    );
    await c.init();
    return c;
  }
}

/** What the constraint follows of the text so far: JSON string state and a pending UTF-8 sequence of byte pieces. */
interface TextState {
  inString: boolean;
  escaped: boolean;
  /** Continuation bytes still owed by the last byte piece's UTF-8 sequence, and the range of the next one. */
  need: number;
  lo: number;
  hi: number;
}

/** One request's JSON grammar state (engine/client.ts TokenConstraint). */
export class JsonConstraint {
  private st: TextState = { inString: false, escaped: false, need: 0, lo: 0x80, hi: 0xbf };
  private closing = false;
  /** The last closing-walk estimate (tokens to close from the state it was made in). */
  private estimate = 0;
  private disposed = false;
  /** Review every token once this few are left. */
  private reviewFrom = REVIEW_FROM;
  private sinceEstimate = 0;
  /** Tokens the closing walk takes from the start: the shortest output this constraint can promise. */
  minTokens = 0;
  /** Ids accepted, for tests and the closing walk's rollback. */
  readonly accepted: number[] = [];

  constructor(
    private readonly matcher: XgGrammarMatcher,
    private readonly tokenizer: Tokenizer,
    private readonly stopIds: readonly number[],
    private readonly closers: ReadonlyMap<string, number>,
    private readonly texts: { ids: ReadonlyMap<string, number>; maxLen: number },
    private readonly clean: Int32Array,
    /** Byte-fallback pieces: token id -> its byte. */
    private readonly bytes: ReadonlyMap<number, number>,
    private readonly vocabSize: number,
  ) {}

  /**
   * The matcher's mask and-ed with the clean mask, and kept to valid UTF-8 over byte pieces: while a sequence is
   * open only the byte pieces that may continue it, else no byte piece that cannot start one. (xgrammar 0.1.27
   * lets byte pieces form sequences a decoder turns into U+FFFD, swallowing the JSON around them.)
   */
  private async mask(): Promise<Int32Array> {
    const m = await this.matcher.getNextTokenBitmask();
    const st = this.st;
    if (st.need > 0) {
      const only = new Int32Array(m.length);
      for (const [id, b] of this.bytes) if (b >= st.lo && b <= st.hi) only[id >> 5] |= m[id >> 5] & (1 << (id & 31));
      return only;
    }
    for (let i = 0; i < m.length; i++) m[i] &= this.clean[i];
    for (const [id, b] of this.bytes) if (!utf8Lead(b)) m[id >> 5] &= ~(1 << (id & 31));
    return m;
  }

  /** Measures minTokens (the closing walk from the start, stop id included). */
  async init(): Promise<void> {
    this.minTokens = await this.walkLength(4096);
    this.estimate = this.minTokens;
    this.reviewFrom = Math.max(REVIEW_FROM, 4 * this.minTokens + WINDOW);
  }

  async nextMask(_remaining: number): Promise<Int32Array> {
    const mask = await this.mask();
    if (!this.closing) return mask;
    const id = this.closingToken(mask);
    const only = new Int32Array(mask.length);
    only[id >> 5] |= 1 << (id & 31);
    return only;
  }

  /**
   * Takes the sampled token (engine/client.ts TokenConstraint.take). Near the limit (within reviewFrom tokens, or
   * within WINDOW of the last estimate) it checks the closing walk after `id` still fits the tokens left after it;
   * if not, it closes from here instead of taking `id`. The walk from here fits: it was checked for the previous
   * token.
   */
  async take(id: number, remaining: number): Promise<number> {
    if (this.stopIds.includes(id)) return id;
    const review = !this.closing && (remaining <= this.reviewFrom || remaining <= this.estimate + WINDOW);
    const before = { ...this.st };
    this.accept(id);
    if (!review) {
      // outside the review zone: refresh the estimate now and then, so that a growing document enters it in time
      if (++this.sinceEstimate >= 8 && remaining <= 4 * this.reviewFrom) {
        this.estimate = await this.walkLength(remaining - 1);
        this.sinceEstimate = 0;
      }
      return id;
    }
    const after = await this.walkLength(remaining - 1);
    if (after <= remaining - 1) {
      this.estimate = after;
      this.sinceEstimate = 0;
      return id;
    }
    this.matcher.rollBack(1);
    this.accepted.pop();
    this.st = before;
    this.closing = true;
    const own = this.closingToken(await this.mask());
    if (!this.stopIds.includes(own)) this.accept(own);
    return own;
  }

  private accept(id: number): void {
    if (!this.matcher.acceptToken(id)) {
      throw new SiftError('INTERNAL', `the grammar rejected token ${id}, which its mask allowed`);
    }
    this.accepted.push(id);
    this.track(id);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.matcher.dispose();
  }

  /** Follows the string / escape state of the JSON text and the UTF-8 state of byte pieces past token `id`. */
  private track(id: number): void {
    const st = this.st;
    const b = this.bytes.get(id);
    if (b !== undefined && st.need > 0) {
      st.need--;
      st.lo = 0x80;
      st.hi = 0xbf;
      return;
    }
    if (b !== undefined && b >= 0x80) {
      st.need = b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : 1;
      st.lo = b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : 0x80;
      st.hi = b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf;
      return;
    }
    for (const ch of this.tokenizer.tokenText(id)) {
      if (st.escaped) st.escaped = false;
      else if (st.inString && ch === '\\') st.escaped = true;
      else if (ch === '"') st.inString = !st.inString;
    }
  }

  private allows(mask: Int32Array, id: number): boolean {
    return id < this.vocabSize && ((mask[id >> 5] >>> (id & 31)) & 1) === 1;
  }

  /** The closing walk's token for a state with allowed tokens `mask`. */
  private closingToken(mask: Int32Array): number {
    for (const s of this.stopIds) if (this.allows(mask, s)) return s;
    // text the grammar forces from here (a key, the rest of an enum value): the longest token of it
    const forced = this.matcher.findJumpForwardString();
    for (let len = Math.min(forced.length, this.texts.maxLen); len > 0; len--) {
      const id = this.texts.ids.get(forced.slice(0, len));
      if (id !== undefined && this.allows(mask, id)) return id;
    }
    for (const ch of this.st.inString ? CLOSE_INSIDE : CLOSE_OUTSIDE) {
      const id = this.closers.get(ch);
      if (id !== undefined && this.allows(mask, id)) return id;
    }
    // anything allowed, shortest text first (lowest id on ties)
    let best = -1;
    let bestLen = Number.POSITIVE_INFINITY;
    for (let id = 0; id < this.vocabSize; id++) {
      if (!this.allows(mask, id)) continue;
      const len = this.tokenizer.tokenText(id).length || Number.POSITIVE_INFINITY;
      if (len < bestLen) {
        best = id;
        bestLen = len;
      }
    }
    if (best < 0) throw new SiftError('INTERNAL', 'the output grammar allows no next token');
    return best;
  }

  /**
   * Tokens the closing walk needs from here (its stop id included), at most `limit` + 1: walked on the matcher,
   * then rolled back.
   */
  private async walkLength(limit: number): Promise<number> {
    const saved = { ...this.st };
    let n = 0;
    try {
      for (; n <= limit; n++) {
        if (this.stopAllowed()) return n + 1;
        // probe the closing walk's candidates with acceptToken (no full mask); a full mask only when none fits
        let id = this.probeClosing();
        if (id === null) {
          id = this.closingToken(await this.mask());
          if (this.stopIds.includes(id)) return n + 1;
          if (!this.matcher.acceptToken(id)) break;
        }
        this.track(id);
      }
      return limit + 1;
    } finally {
      if (n > 0) this.matcher.rollBack(n);
      this.st = saved;
    }
  }

  /** Whether a stop id may come next (accepted and rolled back). */
  private stopAllowed(): boolean {
    for (const s of this.stopIds) {
      if (this.matcher.acceptToken(s)) {
        this.matcher.rollBack(1);
        return true;
      }
    }
    return false;
  }

  /**
   * The closing walk's next token found by trying its candidates in order with acceptToken (which leaves the
   * matcher unchanged when it refuses); the accepted id, or null when no candidate fits (or a UTF-8 sequence is
   * open, which only byte pieces may continue).
   */
  private probeClosing(): number | null {
    if (this.st.need > 0) return null;
    const forced = this.matcher.findJumpForwardString();
    for (let len = Math.min(forced.length, this.texts.maxLen); len > 0; len--) {
      const id = this.texts.ids.get(forced.slice(0, len));
      if (id !== undefined && id < this.vocabSize && this.matcher.acceptToken(id)) return id;
    }
    for (const ch of this.st.inString ? CLOSE_INSIDE : CLOSE_OUTSIDE) {
      const id = this.closers.get(ch);
      if (id !== undefined && this.matcher.acceptToken(id)) return id;
    }
    return null;
  }
}
