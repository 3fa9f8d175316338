import path from 'node:path';
import { openCheckpoint } from '../checkpoint/checkpoint.js';
import { loadModelConfig } from '../checkpoint/config.js';
import { DEFAULT_MODEL } from '../checkpoint/models.js';
import { SiftError } from '../config/errors.js';
import { collectGram, writeGram } from '../model/gram.js';
import { collectImatrix, writeImatrix } from '../model/imatrix.js';
import type { Gpu } from '../shaders/runtime.js';
import { loadText } from '../text/text.js';
import { modelAndText, parse, progressLine } from './common.js';
import { loadWindowEngine, WINDOW_FLAG_DEFS, windowFlags, windowTokensFor } from './window-engine.js';

const HELP = `usage: sift imatrix [--model NAME|DIR] --text FILE --out FILE [options]

Runs the model over a calibration text and writes its importance matrix: for every linear layer (q/k/v, o, gate/up,
down, lm_head) the mean of x^2 at each input channel of the activations entering it, as llama.cpp's imatrix. With
\`--quantize q4 --quantize-imatrix FILE\` (serve, generate, bench) each q4 group's scale and min then minimize the
error weighted by it (calibrated 4-bit; without a file q4 is round to nearest). With --full it writes GPTQ's
statistics instead: for every distinct linear-layer input the full matrix of mean x x^T (the diagonal is the
importance matrix), for \`--quantize q4 --quantize-gptq FILE\` (GPTQ: each column's rounding error spread over the
columns not yet quantized).

  --model NAME|DIR   a known model name (default ${DEFAULT_MODEL}) or an HF directory
  --text FILE        calibration text (UTF-8); paragraphs (blocks separated by a blank line) run as separate
                     documents, each from BOS, long ones in windows of the model's context. Use text other than what
                     you evaluate on (sift ships bench/calibration/stories.txt, written for TinyStories models)
  --out FILE         where to write the matrix (a safetensors file: one f32 vector per weight matrix, or with
                     --full one f32 (cols, cols) matrix per distinct input: 20 MB for stories15M)
  --full             write GPTQ's statistics (mean x x^T per input) instead of the importance matrix
  --max-tokens N     use at most N tokens of the text (default all)
  --window N         tokens per window (default and maximum: the model's context length)
  --chunk N          tokens per forward chunk (default 64)`;

/** The text's paragraphs (blocks between blank lines), trimmed, empty ones dropped. */
export function paragraphs(text: string): string[] {
  return text
    .split(/\r?\n\s*\r?\n/)
    .map((p) => p.replace(/\s+/g, ' ').trim())
    .filter((p) => p.length > 0);
}

export interface ImatrixRun {
  /** Model directory (HF layout). */
  dir: string;
  /** Token ids of each document (each a fresh sequence from BOS). */
  docs: number[][];
  out: string;
  windowTokens?: number;
  chunkTokens?: number;
  /** Says where the text came from (file metadata). */
  source: string;
  /** Write GPTQ's Gram matrices (model/gram.ts) instead of the importance matrix. */
  full?: boolean;
  gpu?: Gpu;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Collects the model's importance matrix (or with `full` its Gram matrices) over the documents and writes it
 * atomically; returns the tokens and the number of tensors written.
 */
export async function imatrixToFile(r: ImatrixRun): Promise<{ tokens: number; tensors: number }> {
  const c = loadModelConfig(r.dir);
  const win = windowTokensFor(c, r.windowTokens);
  const ckpt = openCheckpoint(r.dir);
  const lmHeadName = ckpt.lmHeadName;
  ckpt.close();
  const engine = await loadWindowEngine(r.dir, c, win, r.chunkTokens, r.gpu);
  try {
    const meta = {
      model: path.basename(path.resolve(r.dir)),
      text: r.source,
      documents: String(r.docs.length),
      window: String(win),
    };
    if (r.full) {
      const g = await collectGram(engine, r.docs, { windowTokens: win, onProgress: r.onProgress });
      writeGram(r.out, g, { ...meta, statistic: 'mean of x x^T over the tokens, per distinct linear-layer input' });
      return { tokens: g.tokens, tensors: g.values.size };
    }
    const m = await collectImatrix(engine, r.docs, { windowTokens: win, lmHeadName, onProgress: r.onProgress });
    writeImatrix(r.out, m, { ...meta, statistic: 'mean of x^2 per input channel of each linear layer' });
    return { tokens: m.tokens, tensors: m.values.size };
  } finally {
    engine.destroy();
  }
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parse(
    argv,
    {
      model: { type: 'string' },
      text: { type: 'string' },
      out: { type: 'string' },
      ...WINDOW_FLAG_DEFS,
      full: { type: 'boolean' },
    },
    'imatrix',
  );
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (!values.text || !values.out) {
    process.stderr.write(`sift imatrix: --text and --out are required\n\n${HELP}\n`);
    return 2;
  }
  const { windowTokens, chunkTokens, maxTokens } = windowFlags(values);
  const file = String(values.text);
  const progress = progressLine();
  const { dir, text } = await modelAndText(values.model as string | undefined, file, progress);
  const tok = loadText(dir);
  const docs: number[][] = [];
  let left = maxTokens;
  for (const p of paragraphs(text)) {
    if (left <= 0) break;
    const ids = (await tok.encodePrompt(p)).slice(0, left);
    docs.push(ids);
    left -= ids.length;
  }
  if (docs.length === 0) {
    throw new SiftError('INVALID_ARGUMENT', `--text ${file} holds no text to calibrate on`, { param: 'text' });
  }
  const m = await imatrixToFile({
    dir,
    docs,
    out: String(values.out),
    windowTokens,
    chunkTokens,
    source: path.basename(file),
    full: Boolean(values.full),
    onProgress: (d, t) => progress.update(`imatrix: ${d}/${t} tokens`),
  });
  const what = values.full ? "inputs' Gram matrices (GPTQ)" : "matrices' importances";
  progress.done(
    `sift imatrix: wrote ${m.tensors} ${what} (${m.tokens} tokens, ${docs.length} document${docs.length === 1 ? '' : 's'}) to ${values.out}`,
  );
  return 0;
}
