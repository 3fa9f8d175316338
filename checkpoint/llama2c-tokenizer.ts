/**
 * llama2.c's tokenizer.bin -> a Hugging Face tokenizer.json equivalent to Llama-2's (SentencePiece BPE, byte fallback).
 *
 * tokenizer.bin: int32 max_token_length, then per token id: f32 score, int32 byte length, the piece's bytes.
 * llama2.c's export wrote SentencePiece pieces with "▁" turned into " ", <s>/</s> as "\n<s>\n"/"\n</s>\n", and (in
 * the older layout) the 256 byte-fallback pieces <0x00>..<0xFF> as the UTF-8 encoding of chr(byte). Ids 0/1/2 are
 * <unk>/<s>/</s>; with byte fallback, ids 3..258 are <0x00>..<0xFF>; the rest are ordinary pieces whose score is
 * their merge priority (higher merges first).
 *
 * HF's BPE model merges adjacent pairs by rank instead of by score, so the merge list is derived from the scores:
 * every way to split an ordinary piece into two ordinary pieces is a merge, and merges are ranked by the score of
 * the piece they make (then by that piece's id, then by the ids of the parts). Merging by that rank picks, at every
 * step, the pair whose result scores highest: SentencePiece's own BPE rule.
 */
import { SiftError } from '../config/errors.js';

/** A parsed tokenizer.bin, with pieces already in SentencePiece spelling ("▁", "<0x0A>", "<s>"). */
export interface Llama2cVocab {
  /** (vocab,) piece strings, indexed by token id. */
  pieces: string[];
  /** (vocab,) SentencePiece scores. */
  scores: Float32Array;
  /** True when ids 3..258 are the 256 byte-fallback pieces. */
  byteFallback: boolean;
  /** The file's max_token_length field. */
  maxTokenLength: number;
}

export const SP_SPACE = '\u2581';
const CONTROL = ['<unk>', '<s>', '</s>'] as const;
const FIRST_BYTE_ID = 3;

function invalid(label: string, what: string): SiftError {
  return new SiftError('CHECKPOINT_INVALID', `${label}: ${what}`);
}

function byteName(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
}

/** Parses tokenizer.bin bytes for a model of `vocabSize` tokens; `label` names the file in errors. */
export function parseLlama2cTokenizer(bytes: Uint8Array, vocabSize: number, label: string): Llama2cVocab {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 4) invalidThrow(label, `${bytes.byteLength} bytes, too short for a llama2.c tokenizer`);
  const maxTokenLength = dv.getInt32(0, true);
  if (maxTokenLength <= 0 || maxTokenLength > 1 << 16) {
    invalidThrow(label, `max_token_length ${maxTokenLength} is not plausible; not a llama2.c tokenizer.bin?`);
  }
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const raw: Uint8Array[] = [];
  const scores = new Float32Array(vocabSize);
  let off = 4;
  for (let id = 0; id < vocabSize; id++) {
    if (off + 8 > bytes.byteLength) {
      invalidThrow(
        label,
        `truncated at token ${id} of ${vocabSize}: expected more than ${off + 8} bytes, found ${bytes.byteLength}`,
      );
    }
    scores[id] = dv.getFloat32(off, true);
    const len = dv.getInt32(off + 4, true);
    off += 8;
    if (len < 0 || len > 4 * maxTokenLength + 8) invalidThrow(label, `token ${id} has implausible length ${len}`);
    if (off + len > bytes.byteLength) {
      invalidThrow(
        label,
        `truncated in token ${id} of ${vocabSize}: expected ${off + len} bytes, found ${bytes.byteLength}`,
      );
    }
    raw.push(bytes.subarray(off, off + len));
    off += len;
  }
  if (off !== bytes.byteLength) {
    invalidThrow(
      label,
      `${bytes.byteLength - off} trailing bytes after ${vocabSize} tokens (expected ${off} bytes, found ${bytes.byteLength}); does the vocab size match the checkpoint?`,
    );
  }

  // Byte fallback: ids 3..258 hold byte b as "<0xNN>" (newer export) or as the UTF-8 of chr(b) (older export).
  let byteFallback = vocabSize >= FIRST_BYTE_ID + 256;
  for (let b = 0; byteFallback && b < 256; b++) {
    const r = raw[FIRST_BYTE_ID + b];
    const asChr = Buffer.from(String.fromCharCode(b), 'utf8');
    byteFallback = Buffer.from(r).equals(asChr) || Buffer.from(r).toString('latin1') === byteName(b);
  }

  const pieces: string[] = [];
  const seen = new Map<string, number>();
  for (let id = 0; id < vocabSize; id++) {
    let p: string;
    if (id < CONTROL.length) p = CONTROL[id];
    else if (byteFallback && id < FIRST_BYTE_ID + 256) p = byteName(id - FIRST_BYTE_ID);
    else {
      try {
        p = utf8.decode(raw[id]).replaceAll(' ', SP_SPACE);
      } catch {
        invalidThrow(label, `token ${id} is not valid UTF-8`);
      }
    }
    const dup = seen.get(p);
    if (dup !== undefined) invalidThrow(label, `token ${id} repeats the piece of token ${dup} (${JSON.stringify(p)})`);
    seen.set(p, id);
    pieces.push(p);
  }
  return { pieces, scores, byteFallback, maxTokenLength };
}

function invalidThrow(label: string, what: string): never {
  throw invalid(label, what);
}

/** The id of the first ordinary (mergeable) piece. */
export function firstOrdinaryId(v: Llama2cVocab): number {
  return v.byteFallback ? FIRST_BYTE_ID + 256 : CONTROL.length;
}

/** Merge list ranked by SentencePiece's rule (see the file comment): [left, right] pairs, highest priority first. */
export function deriveMerges(v: Llama2cVocab): [string, string][] {
  const first = firstOrdinaryId(v);
  return sentencePieceMerges(v.pieces, v.scores, (id) => id >= first);
}

/**
 * The BPE merge list equivalent to a SentencePiece BPE vocabulary: every split of an ordinary piece into two ordinary
 * pieces, ranked by the score of the piece made (then its id, then the parts' ids). `ordinary(id)` says which ids
 * take part (not control, unknown, byte or user-defined pieces).
 */
export function sentencePieceMerges(
  pieces: readonly string[],
  scores: ArrayLike<number>,
  ordinary: (id: number) => boolean,
): [string, string][] {
  const byPiece = new Map<string, number>();
  for (let id = 0; id < pieces.length; id++) if (ordinary(id)) byPiece.set(pieces[id], id);
  const found: { l: string; r: string; score: number; id: number; lid: number; rid: number }[] = [];
  for (let id = 0; id < pieces.length; id++) {
    if (!ordinary(id)) continue;
    const chars = Array.from(pieces[id]); // split on code points, never inside a surrogate pair
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join('');
      const r = chars.slice(k).join('');
      const lid = byPiece.get(l);
      const rid = byPiece.get(r);
      if (lid !== undefined && rid !== undefined) found.push({ l, r, score: scores[id], id, lid, rid });
    }
  }
  found.sort((a, b) => b.score - a.score || a.id - b.id || a.lid - b.lid || a.rid - b.rid);
  return found.map((m) => [m.l, m.r]);
}

/** The tokenizer.json object (HF `tokenizers` format) for a llama2.c vocab, Llama-2 style. */
export function buildTokenizerJson(v: Llama2cVocab): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  v.pieces.forEach((p, id) => {
    vocab[p] = id;
  });
  const merges = deriveMerges(v);
  // "l r" strings are the widely read form; fall back to pairs if a piece could contain a space.
  const anySpace = merges.some(([l, r]) => l.includes(' ') || r.includes(' '));
  const added = CONTROL.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    // SentencePiece's add_dummy_prefix + whitespace escaping.
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: SP_SPACE },
        { type: 'Replace', pattern: { String: ' ' }, content: SP_SPACE },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SP_SPACE }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: v.byteFallback,
      ignore_merges: false,
      vocab,
      merges: anySpace ? merges : merges.map(([l, r]) => `${l} ${r}`),
    },
  };
}
