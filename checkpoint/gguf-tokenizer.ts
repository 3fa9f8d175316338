/**
 * A GGUF file's tokenizer (tokenizer.ggml.*) -> the HF tokenizer.json and tokenizer_config.json it stands for, so
 * text/ loads a GGUF model's tokenizer and chat template exactly as it loads an HF directory's.
 *
 * - tokenizer.huggingface.json, when present, is the HF tokenizer.json itself and is used as is.
 * - tokenizer.ggml.model "llama" (SentencePiece BPE: tokens, scores, token types): Llama-2 style tokenizer.json,
 *   the BPE merge list derived from the scores (SentencePiece's rule, llama2c-tokenizer.ts), byte fallback when the
 *   vocabulary has byte pieces, "▁" dummy prefix unless tokenizer.ggml.add_space_prefix is false.
 * - "gpt2" (byte-level BPE: tokens, merges): ByteLevel tokenizer.json; the pre-tokenizer's split regex comes from
 *   tokenizer.ggml.pre (llama-bpe / llama3, qwen2, gpt2 / default), since each model family splits text its own way;
 *   an unknown pre-tokenizer is an error naming the key rather than a silently different tokenization.
 * Token types (1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte): control and user-defined tokens
 * become added tokens (matched whole before the model runs; control ones special, i.e. skipped when decoding).
 */
import { SiftError } from '../config/errors.js';
import type { GgufFile } from './gguf.js';
import { SP_SPACE, sentencePieceMerges } from './llama2c-tokenizer.js';

const TYPE_NORMAL = 1;
const TYPE_UNKNOWN = 2;
const TYPE_CONTROL = 3;
const TYPE_USER = 4;
const TYPE_BYTE = 6;

/** Split regexes of byte-level BPE pre-tokenizers, by tokenizer.ggml.pre. */
const PRE_SPLIT: Readonly<Record<string, string | null>> = {
  // null: GPT-2's own (ByteLevel with use_regex).
  default: null,
  gpt2: null,
  'llama-bpe': String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  llama3: String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  qwen2: String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
};

export interface GgufTokenizerFiles {
  /** tokenizer.json content. */
  tokenizer: Record<string, unknown>;
  /** tokenizer_config.json content: bos/eos/unk tokens, add_bos_token, chat_template. */
  tokenizerConfig: Record<string, unknown>;
}

const isString = (x: unknown): x is string => typeof x === 'string';
const isNumber = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);

function addedToken(id: number, content: string, special: boolean) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special };
}

export function ggufTokenizerFiles(g: GgufFile): GgufTokenizerFiles {
  const model = g.string('tokenizer.ggml.model');
  const tokens = g.array('tokenizer.ggml.tokens', isString, 'a string');
  const hfJson = g.string('tokenizer.huggingface.json');
  let tokenizer: Record<string, unknown>;
  if (hfJson !== undefined) {
    try {
      tokenizer = JSON.parse(hfJson) as Record<string, unknown>;
    } catch (e) {
      throw new SiftError(
        'CHECKPOINT_INVALID',
        `${g.path}: metadata key tokenizer.huggingface.json is not valid JSON (${(e as Error).message})`,
      );
    }
  } else {
    if (model === undefined)
      throw new SiftError('CHECKPOINT_INVALID', `${g.path}: metadata key tokenizer.ggml.model missing`);
    if (!tokens) throw new SiftError('CHECKPOINT_INVALID', `${g.path}: metadata key tokenizer.ggml.tokens missing`);
    const n = tokens.length;
    const types = g.array('tokenizer.ggml.token_type', isNumber, 'a token type') ?? new Array(n).fill(TYPE_NORMAL);
    if (types.length !== n) {
      throw new SiftError(
        'CHECKPOINT_INVALID',
        `${g.path}: metadata key tokenizer.ggml.token_type has ${types.length} entries for ${n} tokens`,
      );
    }
    if (model === 'llama') tokenizer = sentencePieceJson(g, tokens, types);
    else if (model === 'gpt2') tokenizer = byteLevelJson(g, tokens, types);
    else {
      throw new SiftError(
        'CHECKPOINT_UNSUPPORTED',
        `${g.path}: metadata key tokenizer.ggml.model is ${JSON.stringify(model)}; supported: llama (SentencePiece), gpt2 (byte-level BPE)`,
      );
    }
  }

  const tokenAt = (key: string): string | null => {
    if (!g.metadata.has(key)) return null;
    const id = g.number(key);
    if (!tokens || !Number.isInteger(id) || id < 0 || id >= tokens.length) {
      throw new SiftError(
        'CHECKPOINT_INVALID',
        `${g.path}: metadata key ${key} (${id}) is not a token id of the vocabulary`,
      );
    }
    return tokens[id];
  };
  const addBos = g.boolean('tokenizer.ggml.add_bos_token') ?? model === 'llama';
  const tokenizerConfig: Record<string, unknown> = {
    bos_token: addBos ? tokenAt('tokenizer.ggml.bos_token_id') : null,
    eos_token: tokenAt('tokenizer.ggml.eos_token_id'),
    unk_token: tokenAt('tokenizer.ggml.unknown_token_id'),
    pad_token: tokenAt('tokenizer.ggml.padding_token_id'),
    add_bos_token: addBos,
  };
  const template = g.string('tokenizer.chat_template');
  if (template !== undefined) tokenizerConfig.chat_template = template;
  return { tokenizer, tokenizerConfig };
}

function sentencePieceJson(g: GgufFile, tokens: string[], types: number[]): Record<string, unknown> {
  const n = tokens.length;
  const scores = g.array('tokenizer.ggml.scores', isNumber, 'a number') ?? new Array(n).fill(0);
  if (scores.length !== n) {
    throw new SiftError(
      'CHECKPOINT_INVALID',
      `${g.path}: metadata key tokenizer.ggml.scores has ${scores.length} entries for ${n} tokens`,
    );
  }
  const vocab: Record<string, number> = {};
  for (let id = n - 1; id >= 0; id--) vocab[tokens[id]] = id; // the first id of a repeated piece wins
  const byteFallback = types.includes(TYPE_BYTE);
  const unkId = types.indexOf(TYPE_UNKNOWN);
  const added = [];
  for (let id = 0; id < n; id++) {
    if (types[id] === TYPE_CONTROL || types[id] === TYPE_UNKNOWN) added.push(addedToken(id, tokens[id], true));
    else if (types[id] === TYPE_USER) added.push(addedToken(id, tokens[id], false));
  }
  const merges = sentencePieceMerges(tokens, scores, (id) => types[id] === TYPE_NORMAL);
  const anySpace = merges.some(([l, r]) => l.includes(' ') || r.includes(' '));
  const prefix = g.boolean('tokenizer.ggml.add_space_prefix') ?? true;
  const replace = { type: 'Replace', pattern: { String: ' ' }, content: SP_SPACE };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: prefix ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: SP_SPACE }, replace] } : replace,
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SP_SPACE }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(prefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unkId >= 0 ? tokens[unkId] : null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: byteFallback,
      ignore_merges: false,
      vocab,
      merges: anySpace ? merges : merges.map(([l, r]) => `${l} ${r}`),
    },
  };
}

function byteLevelJson(g: GgufFile, tokens: string[], types: number[]): Record<string, unknown> {
  const merges = g.array('tokenizer.ggml.merges', isString, 'a string');
  if (!merges) throw new SiftError('CHECKPOINT_INVALID', `${g.path}: metadata key tokenizer.ggml.merges missing`);
  for (let i = 0; i < merges.length; i++) {
    if (merges[i].split(' ').length !== 2) {
      throw new SiftError(
        'CHECKPOINT_INVALID',
        `${g.path}: metadata key tokenizer.ggml.merges[${i}] (${JSON.stringify(merges[i])}) is not "left right"`,
      );
    }
  }
  const pre = g.string('tokenizer.ggml.pre') ?? 'default';
  if (!Object.hasOwn(PRE_SPLIT, pre)) {
    throw new SiftError(
      'CHECKPOINT_UNSUPPORTED',
      `${g.path}: metadata key tokenizer.ggml.pre is ${JSON.stringify(pre)}; supported: ${Object.keys(PRE_SPLIT).join(', ')}`,
    );
  }
  const split = PRE_SPLIT[pre];
  const vocab: Record<string, number> = {};
  for (let id = tokens.length - 1; id >= 0; id--) vocab[tokens[id]] = id;
  const added = [];
  for (let id = 0; id < tokens.length; id++) {
    if (types[id] === TYPE_CONTROL) added.push(addedToken(id, tokens[id], true));
    else if (types[id] === TYPE_USER) added.push(addedToken(id, tokens[id], false));
  }
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: split === null };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: pre === 'qwen2' ? { type: 'NFC' } : null,
    pre_tokenizer:
      split === null
        ? byteLevel
        : {
            type: 'Sequence',
            pretokenizers: [
              { type: 'Split', pattern: { Regex: split }, behavior: 'Isolated', invert: false },
              byteLevel,
            ],
          },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: pre === 'llama-bpe' || pre === 'llama3',
      vocab,
      merges,
    },
  };
}
