/**
 * Text <-> token ids for a model directory, over the npm `tokenizers` binding (HF tokenizer.json).
 * Encoding runs in the binding (async); decoding is synchronous (ids -> pieces -> the tokenizer.json decoder), so a
 * stream decoder can turn each generated id into text at once.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from 'tokenizers';
import { SiftError } from '../config/errors.js';
import { idList, readModelJson, tokenContent } from './model-files.js';
import { type LengthBound, minTokensOf } from './prompt-bound.js';

const REPLACEMENT = '\uFFFD';

export interface EncodeOptions {
  /** Prepend the BOS token (if the tokenizer has one and the text does not already start with it). Default true. */
  addBos?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, other added special tokens). Default true. */
  skipSpecial?: boolean;
}

/** Turns generated ids into text incrementally. */
export interface StreamDecoder {
  /** Adds one id; returns the text it completes (possibly "", e.g. while a UTF-8 sequence is incomplete). */
  push(id: number): string;
  /** Returns whatever is held back (an incomplete sequence decodes to U+FFFD, as a full decode would). */
  flush(): string;
}

export interface StreamDecoderOptions {
  /** Ids already in the sequence (the prompt) that give context but are not emitted: with them, a first output
   * token "▁there" after "Once upon a time" streams as " there" rather than "there". */
  context?: readonly number[];
  /** As in DecodeOptions. Default true. */
  skipSpecial?: boolean;
}

export class Tokenizer {
  /** Ids of added tokens marked special (skipped by decode unless asked). */
  readonly specialIds: ReadonlySet<number>;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly vocabSize: number;
  /** tokenizer.json's `decoder` (its type tells byte-level from byte-fallback vocabularies), or null. */
  readonly decoderJson: unknown;
  private readonly hf: HfTokenizer;
  private readonly pieces: (string | null)[] = [];
  private pieceBound: { chars: number; bytes: number } | null = null;

  private constructor(
    hf: HfTokenizer,
    specialIds: Set<number>,
    bos: { id: number | null; token: string | null },
    eos: { id: number | null; token: string | null },
    decoderJson: unknown = null,
  ) {
    this.decoderJson = decoderJson;
    this.hf = hf;
    this.specialIds = specialIds;
    this.bosId = bos.id;
    this.bosToken = bos.token;
    this.eosId = eos.id;
    this.eosToken = eos.token;
    this.vocabSize = hf.getVocabSize(true);
  }

  /** Loads `<dir>/tokenizer.json`, with BOS/EOS from tokenizer_config.json (else config.json's ids). */
  static load(dir: string): Tokenizer {
    const file = path.join(dir, 'tokenizer.json');
    if (!fs.existsSync(file)) throw new SiftError('CHECKPOINT_INVALID', `${dir}: no tokenizer.json`);
    let hf: HfTokenizer;
    try {
      hf = HfTokenizer.fromFile(file);
    } catch (e) {
      throw new SiftError('CHECKPOINT_INVALID', `${file}: cannot load (${(e as Error).message})`, { cause: e });
    }
    const json = readModelJson(dir, 'tokenizer.json');
    const special = new Set<number>();
    for (const t of (json.added_tokens as { id: number; special?: boolean }[] | undefined) ?? []) {
      if (t.special) special.add(t.id);
    }
    const tc = readModelJson(dir, 'tokenizer_config.json');
    const cfg = readModelJson(dir, 'config.json');
    const pick = (token: unknown, fallbackId: unknown) => {
      const content = tokenContent(token);
      const id = content === null ? null : hf.tokenToId(content);
      if (content !== null && id !== null && id !== undefined) return { id, token: content };
      const fid = idList(fallbackId)[0] ?? null;
      return { id: fid, token: fid === null ? null : hf.idToToken(fid) };
    };
    const t = new Tokenizer(
      hf,
      special,
      pick(tc.bos_token, cfg.bos_token_id),
      pick(tc.eos_token, cfg.eos_token_id),
      json.decoder ?? null,
    );
    t.shrink = normalizerShrink(json.normalizer);
    return t;
  }

  /**
   * How far the tokenizer.json normalizer can shorten a text (factor on characters and bytes): 1 for the ones that
   * never shorten (none, Prepend, Replace " " -> "▁", Lowercase), 4 for Unicode normalization forms (composition:
   * at most 3 code units -> 1), Infinity for those that can drop any amount (Strip, StripAccents, Bert, Precompiled,
   * regex Replace, ...): no length bound then.
   */
  private shrink = Number.POSITIVE_INFINITY;

  /**
   * A lower bound on the tokens of any text holding all of `texts`, from their lengths alone (no tokenizing): no
   * token covers more characters (UTF-16 units) or UTF-8 bytes than the longest vocabulary piece, added tokens
   * included, times what the normalizer may shrink. 0 when the normalizer makes lengths meaningless.
   */
  minTokens(texts: readonly string[]): number {
    return minTokensOf(texts, this.lengthBound());
  }

  /**
   * What minTokens judges from (text/prompt-bound.ts), as plain numbers that can go to another thread; null when the
   * normalizer makes lengths meaningless. The vocabulary is walked once, on the first call.
   */
  lengthBound(): LengthBound | null {
    if (!Number.isFinite(this.shrink)) return null;
    this.pieceBound ??= this.longestPiece();
    return { pieceChars: this.pieceBound.chars, pieceBytes: this.pieceBound.bytes, shrink: this.shrink };
  }

  /** The longest vocabulary piece (as stored: never shorter than the text it decodes to) in chars and bytes. */
  private longestPiece(): { chars: number; bytes: number } {
    let chars = 1;
    let bytes = 1;
    for (const piece of Object.keys(this.hf.getVocab(true))) {
      if (piece.length > chars) chars = piece.length;
      const b = Buffer.byteLength(piece, 'utf8');
      if (b > bytes) bytes = b;
    }
    return { chars, bytes };
  }

  /** Token ids of `text` (no EOS is ever added). */
  async encode(text: string, opts: EncodeOptions = {}): Promise<number[]> {
    if (typeof text !== 'string') throw new SiftError('INVALID_ARGUMENT', 'text to encode must be a string');
    const enc = await this.hf.encode(text, null, { addSpecialTokens: false });
    const ids = enc.getIds();
    if ((opts.addBos ?? true) && this.bosId !== null && ids[0] !== this.bosId) ids.unshift(this.bosId);
    return ids;
  }

  /** The piece (vocabulary string) of `id`, or null if out of range. */
  idToToken(id: number): string | null {
    let p = this.pieces[id];
    if (p === undefined) {
      p = Number.isInteger(id) && id >= 0 && id < this.vocabSize ? this.hf.idToToken(id) : null;
      this.pieces[id] = p;
    }
    return p;
  }

  tokenToId(token: string): number | null {
    return this.hf.tokenToId(token) ?? null;
  }

  /**
   * The text of one token on its own, as logprobs show it: a byte piece ("<0x0A>") as that byte's character, a
   * SentencePiece piece with "▁" as spaces (the leading space kept), anything else as the decoder writes it; ''
   * for an id outside the vocabulary.
   */
  tokenText(id: number): string {
    const piece = this.idToToken(id);
    if (piece === null) return '';
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (byte) return String.fromCharCode(Number.parseInt(byte[1], 16));
    if (piece.includes('\u2581')) return piece.replace(/\u2581/g, ' ');
    return this.decode([id], { skipSpecial: false });
  }

  /** Text of `ids` (what the tokenizer.json decoder makes of them; SentencePiece's leading space is dropped). */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const skip = opts.skipSpecial ?? true;
    const pieces: string[] = [];
    for (const id of ids) {
      if (skip && this.specialIds.has(id)) continue;
      const p = this.idToToken(id);
      if (p === null)
        throw new SiftError('INVALID_ARGUMENT', `token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
      pieces.push(p);
    }
    if (pieces.length === 0) return '';
    const dec = this.hf.getDecoder();
    return dec ? dec.decode(pieces) : pieces.join('');
  }

  /**
   * A stream decoder. It decodes a short window of ids that starts before the newest emitted text, and emits the
   * part of the window's text beyond what the window decoded to before; text ending in U+FFFD (an incomplete
   * UTF-8 sequence from byte-fallback pieces) is held back until the sequence completes. Because the window always
   * starts at the same id for both decodes, decoder rules that depend on position (SentencePiece's dropped leading
   * space) affect both equally, so concatenated pushes plus flush() equal decode() of all ids. (One deliberate
   * difference: ids that end mid-character flush as the complete text plus U+FFFD for the loose bytes, where HF's
   * ByteFallback decoder turns the whole run of byte pieces, complete characters included, into U+FFFD.)
   */
  createStreamDecoder(opts: StreamDecoderOptions = {}): StreamDecoder {
    const skip = opts.skipSpecial ?? true;
    const ids: number[] = [];
    for (const id of opts.context ?? []) if (!(skip && this.specialIds.has(id))) ids.push(id);
    // ids[windowStart, emittedEnd) decoded to the text already emitted (or to context); ids[emittedEnd..] are pending.
    let emittedEnd = ids.length;
    let windowStart = Math.max(0, emittedEnd - 4);
    const decodeRange = (a: number, b: number) => this.decode(ids.slice(a, b), { skipSpecial: false });
    const step = (final: boolean): string => {
      if (emittedEnd === ids.length) return '';
      const before = decodeRange(windowStart, emittedEnd);
      const now = decodeRange(windowStart, ids.length);
      if (!final && (now.length <= before.length || now.endsWith(REPLACEMENT))) return '';
      // `before` is a prefix of `now` except where a byte-fallback decoder groups the window's last complete bytes
      // with the new incomplete ones and turns the whole run into U+FFFD; then decode the new ids alone (they start
      // with byte pieces there, so no leading-space rule applies to them).
      const out = now.startsWith(before) ? now.slice(before.length) : decodeRange(emittedEnd, ids.length);
      windowStart = emittedEnd;
      emittedEnd = ids.length;
      return out;
    };
    return {
      push: (id: number) => {
        if (skip && this.specialIds.has(id)) return '';
        if (this.idToToken(id) === null) {
          throw new SiftError('INVALID_ARGUMENT', `token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
        }
        ids.push(id);
        return step(false);
      },
      flush: () => step(true),
    };
  }
}

/** See Tokenizer.shrink. */
export function normalizerShrink(n: unknown): number {
  if (n === null || n === undefined) return 1;
  if (typeof n !== 'object') return Number.POSITIVE_INFINITY;
  const o = n as { type?: unknown; normalizers?: unknown; pattern?: { String?: unknown }; content?: unknown };
  switch (o.type) {
    case 'Sequence':
      return Array.isArray(o.normalizers)
        ? o.normalizers.reduce((f: number, x) => f * normalizerShrink(x), 1)
        : Infinity;
    case 'Prepend':
    case 'Lowercase':
      return 1;
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD':
      return 4;
    case 'Replace': {
      const from = o.pattern?.String;
      if (typeof from !== 'string' || typeof o.content !== 'string' || from.length === 0) return Infinity;
      return Math.max(
        1,
        from.length / Math.max(1, o.content.length),
        Buffer.byteLength(from) / Math.max(1, Buffer.byteLength(o.content)),
      );
    }
    default:
      return Number.POSITIVE_INFINITY;
  }
}
