/**
 * Tiny llama2.c v0 checkpoints and tokenizer.bin files (older layout: byte tokens stored raw), seeded, for importer
 * tests; plus SentencePiece's BPE encoding rule written directly (greedy highest-score merge) as a reference.
 */
import { Rng } from '../helpers/rng.js';

export interface SynthShape {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  shared: boolean;
}

export const TINY: SynthShape = {
  dim: 16,
  hiddenDim: 24,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  vocabSize: 0, // set from the vocab below
  seqLen: 8,
  shared: true,
};

/** The named f32 blocks of a v0 checkpoint in file order, each (count, rows, cols). */
export function llama2cBlocks(s: SynthShape): { name: string; n: number; rows: number; cols: number }[] {
  const hs = s.dim / s.nHeads;
  const kv = s.nKvHeads * hs;
  const L = s.nLayers;
  const b = [
    { name: 'tok', n: 1, rows: s.vocabSize, cols: s.dim },
    { name: 'rms_att', n: L, rows: 1, cols: s.dim },
    { name: 'wq', n: L, rows: s.dim, cols: s.dim },
    { name: 'wk', n: L, rows: kv, cols: s.dim },
    { name: 'wv', n: L, rows: kv, cols: s.dim },
    { name: 'wo', n: L, rows: s.dim, cols: s.dim },
    { name: 'rms_ffn', n: L, rows: 1, cols: s.dim },
    { name: 'w1', n: L, rows: s.hiddenDim, cols: s.dim },
    { name: 'w2', n: L, rows: s.dim, cols: s.hiddenDim },
    { name: 'w3', n: L, rows: s.hiddenDim, cols: s.dim },
    { name: 'rms_final', n: 1, rows: 1, cols: s.dim },
    { name: 'freq_real', n: 1, rows: s.seqLen, cols: hs / 2 },
    { name: 'freq_imag', n: 1, rows: s.seqLen, cols: hs / 2 },
  ];
  if (!s.shared) b.push({ name: 'wcls', n: 1, rows: s.vocabSize, cols: s.dim });
  return b;
}

/** A seeded checkpoint: the file bytes and each block's values (per layer) for checking. */
export function synthCheckpoint(s: SynthShape, seed: number): { bytes: Buffer; blocks: Map<string, Float32Array[]> } {
  const rng = new Rng(seed);
  const header = Buffer.alloc(28);
  const fields = [s.dim, s.hiddenDim, s.nLayers, s.nHeads, s.nKvHeads, s.shared ? s.vocabSize : -s.vocabSize, s.seqLen];
  for (let i = 0; i < fields.length; i++) header.writeInt32LE(fields[i], i * 4);
  const parts: Buffer[] = [header];
  const blocks = new Map<string, Float32Array[]>();
  for (const b of llama2cBlocks(s)) {
    const per: Float32Array[] = [];
    for (let i = 0; i < b.n; i++) {
      const a = rng.uniformArray(b.rows * b.cols, 1);
      per.push(a);
      parts.push(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
    }
    blocks.set(b.name, per);
  }
  return { bytes: Buffer.concat(parts), blocks };
}

/** Ordinary pieces of the tiny vocab (llama2.c spelling: spaces, not "▁"), highest score first. */
export const TINY_PIECES = [
  ' t',
  'he',
  ' a',
  'th',
  ' the',
  'in',
  ' c',
  'at',
  ' cat',
  'an',
  'the',
  ' s',
  'at ',
  ' ',
  'e',
  'h',
  't',
  'a',
  'c',
  'i',
  'n',
  's',
  'é',
];

/** tokenizer.bin bytes (older layout) for TINY_PIECES; scores are -rank. Returns the vocab size too. */
export function synthTokenizer(pieces: readonly string[] = TINY_PIECES): { bytes: Buffer; vocabSize: number } {
  const entries: { score: number; bytes: Buffer }[] = [
    { score: 0, bytes: Buffer.from('<unk>') },
    { score: 0, bytes: Buffer.from('\n<s>\n') },
    { score: 0, bytes: Buffer.from('\n</s>\n') },
  ];
  for (let b = 0; b < 256; b++) entries.push({ score: 0, bytes: Buffer.from(String.fromCharCode(b), 'utf8') });
  pieces.forEach((p, i) => {
    entries.push({ score: -i, bytes: Buffer.from(p, 'utf8') });
  });
  const maxLen = Math.max(...entries.map((e) => e.bytes.length));
  const parts: Buffer[] = [Buffer.alloc(4)];
  parts[0].writeInt32LE(maxLen);
  for (const e of entries) {
    const h = Buffer.alloc(8);
    h.writeFloatLE(e.score, 0);
    h.writeInt32LE(e.bytes.length, 4);
    parts.push(h, e.bytes);
  }
  return { bytes: Buffer.concat(parts), vocabSize: entries.length };
}

/**
 * SentencePiece BPE, directly: text -> "▁"-escaped characters with a dummy prefix, then repeatedly merge the
 * adjacent pair whose concatenation is an ordinary piece with the highest score (leftmost on ties); pieces not in
 * the vocab become byte tokens (3 + byte). `pieces`/`scores` in SentencePiece spelling, indexed by id.
 */
export function spEncode(
  text: string,
  pieces: readonly string[],
  scores: ArrayLike<number>,
  firstOrdinary: number,
): number[] {
  if (text === '') return [];
  const ord = new Map<string, number>();
  for (let id = firstOrdinary; id < pieces.length; id++) ord.set(pieces[id], id);
  const toks = Array.from(`\u2581${text.replaceAll(' ', '\u2581')}`);
  for (;;) {
    let best = -Infinity;
    let at = -1;
    for (let i = 0; i + 1 < toks.length; i++) {
      const id = ord.get(toks[i] + toks[i + 1]);
      if (id !== undefined && scores[id] > best) {
        best = scores[id];
        at = i;
      }
    }
    if (at < 0) break;
    toks.splice(at, 2, toks[at] + toks[at + 1]);
  }
  const ids: number[] = [];
  for (const t of toks) {
    const id = ord.get(t);
    if (id !== undefined) ids.push(id);
    else for (const b of Buffer.from(t, 'utf8')) ids.push(3 + b);
  }
  return ids;
}
