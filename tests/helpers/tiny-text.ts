/**
 * Small text sides (tokenizer.json + tokenizer_config.json) written from scratch, for tests that must run without
 * the stories15M download. The vocab is laid out as llama2.c's tokenizer.bin is (ids 0/1/2 = <unk>/<s>/</s>, then
 * optionally the 256 byte-fallback pieces, then ordinary pieces scored by rank) and converted by sift's own importer
 * (buildTokenizerJson), so encoding follows SentencePiece's BPE rule exactly as for a real Llama-2 tokenizer.
 *
 * - storyTextDir(): byte fallback plus every prefix of every word of STORY_WORDS (each with its leading space) and
 *   every single character in them: English text encodes to word-sized pieces, anything else to bytes.
 * - lettersTextDir(): the 26 lowercase letters, no byte fallback (vocab 29): small enough to be the whole vocab of
 *   a synthetic model, and every generated id is one character of text.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildTokenizerJson, type Llama2cVocab, SP_SPACE } from '../../checkpoint/llama2c-tokenizer.js';
import { writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { loadText, type TextSide } from '../../text/text.js';

/** The text the story vocab is built from (and the fake engine's script, see tests/server/fake-engine.ts). */
export const STORY =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. One day, she saw a big, red ball in the sky.';

/** Words (beyond STORY's) that test prompts use. */
const PROMPT_WORDS = 'Tell me a story. Hello Hi x';

export const LETTERS = 'abcdefghijklmnopqrstuvwxyz';

/** Ordinary pieces (SentencePiece spelling) for `text`: each word with its leading "▁", all its prefixes, every char. */
export function wordPieces(text: string): string[] {
  const out = new Set<string>();
  const chars = new Set<string>([SP_SPACE]);
  for (const word of text.split(/\s+/).filter(Boolean)) {
    const w = SP_SPACE + word;
    for (const c of Array.from(word)) chars.add(c);
    for (let k = 2; k <= w.length; k++) out.add(w.slice(0, k));
  }
  // Longer pieces score higher, so a word merges into one piece whenever it can.
  return [...[...out].sort((a, b) => b.length - a.length || (a < b ? -1 : 1)), ...chars];
}

/**
 * Writes tokenizer.json and tokenizer_config.json (<s> / </s>, no chat template) for `pieces` into `dir`.
 * Returns the vocab size.
 */
export function writeTextSide(dir: string, pieces: readonly string[], byteFallback: boolean): number {
  const all = ['<unk>', '<s>', '</s>'];
  if (byteFallback) for (let b = 0; b < 256; b++) all.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const first = all.length;
  all.push(...pieces);
  const scores = new Float32Array(all.length);
  for (let i = first; i < all.length; i++) scores[i] = -(i - first);
  const vocab: Llama2cVocab = {
    pieces: all,
    scores,
    byteFallback,
    maxTokenLength: Math.max(...all.map((p) => p.length)),
  };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(buildTokenizerJson(vocab)));
  fs.writeFileSync(
    path.join(dir, 'tokenizer_config.json'),
    JSON.stringify({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }),
  );
  return all.length;
}

let root: string | null = null;
const dirs = new Map<string, string>();

/** A directory under one temp root per process (removed when the process exits). */
function scratch(name: string): string {
  if (root === null) {
    const r = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-text-'));
    root = r;
    process.on('exit', () => fs.rmSync(r, { recursive: true, force: true }));
  }
  return path.join(root, name);
}

function cached(name: string, write: (dir: string) => void): string {
  let d = dirs.get(name);
  if (d === undefined) {
    d = scratch(name);
    write(d);
    dirs.set(name, d);
  }
  return d;
}

/** The story vocab's model directory (text side only). */
export function storyTextDir(): string {
  return cached('story', (d) => writeTextSide(d, wordPieces(`${STORY} ${PROMPT_WORDS}`), true));
}

/** The letters vocab's model directory (text side only); write a model beside it with vocab LETTERS.length + 3. */
export function lettersTextDir(): string {
  return cached('letters', (d) => writeTextSide(d, [...LETTERS], false));
}

let story: TextSide | null = null;

/** The story vocab's text side. */
export function storyText(): TextSide {
  story ??= loadText(storyTextDir());
  return story;
}

/** A fresh temp directory for a test's own model (removed at exit with the rest). */
export function scratchDir(name: string): string {
  const d = scratch(`${name}-${dirs.size}-${Math.random().toString(36).slice(2, 8)}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

/**
 * Writes a 1-layer random-init Llama (hidden 32, 2 heads, f32, untied embeddings so greedy decoding does not repeat
 * its input, 256 positions) over a vocabulary of `vocab` tokens into `dir`, beside its text side.
 */
export function writeTinyLlama(dir: string, vocab: number, seed: number): void {
  writeSyntheticCheckpoint(dir, {
    architecture: 'LlamaForCausalLM',
    dtype: 'f32',
    sharded: false,
    tie: 'untied',
    hidden: 32,
    layers: 1,
    heads: 2,
    kvHeads: 2,
    intermediate: 64,
    vocab,
    maxPositions: 256,
    seed,
  });
}
