/**
 * `sift calibrate --model M --text FILE --out heads.tsv [--sink 128 --local 256 --max-tokens N --window N]`:
 * scores every (layer, KV head) by the mean share of its attention mass outside sink + local over the text
 * (model/calibration.ts) and writes the head-pattern TSV that model/head-plan.ts reads (higher = retrieval).
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadModelConfig } from '../checkpoint/config.js';
import { DEFAULT_MODEL } from '../checkpoint/models.js';
import { resolveModel } from '../checkpoint/pull.js';
import { attentionConfig } from '../config/attention.js';
import { engineConfig } from '../config/engine.js';
import { SiftError } from '../config/errors.js';
import { intFlag } from '../config/flags.js';
import { calibrateHeads, formatHeadPattern } from '../model/calibration.js';
import { KvStorage } from '../model/kv-storage.js';
import { ModelRunner } from '../model/runner.js';
import type { Gpu } from '../shaders/runtime.js';
import {
  DEFAULT_LOCAL_TOKENS as DEFAULT_STREAMING_LOCAL,
  DEFAULT_SINK_TOKENS as DEFAULT_STREAMING_SINK,
} from '../shaders/streaming_attention.js';
import { loadText } from '../text/text.js';
import { parse, progressLine } from './common.js';

const HELP = `usage: sift calibrate [--model NAME|DIR] --text FILE --out FILE [options]

Scores each (layer, KV head) by the mean share of attention mass outside the streaming window (sink + local) over
the text, and writes a head-pattern TSV (one line per layer, one score per KV head, higher = retrieval head).

  --model NAME|DIR   a known model name (default ${DEFAULT_MODEL}) or an HF directory
  --text FILE        text to run (UTF-8); long texts are taken in windows of the model's context
  --out FILE         where to write the TSV
  --sink N           sink tokens (default ${DEFAULT_STREAMING_SINK})
  --local N          local window tokens (default ${DEFAULT_STREAMING_LOCAL})
  --max-tokens N     use at most N tokens of the text (default all)
  --window N         tokens per window (default and maximum: the model's context length)
  --chunk N          tokens per forward chunk (default 64)`;

export interface CalibrateRun {
  /** Model directory (HF layout). */
  dir: string;
  ids: readonly number[];
  out: string;
  sinkTokens: number;
  localTokens: number;
  windowTokens?: number;
  chunkTokens?: number;
  /** Says where the text came from in the TSV header. */
  source: string;
  gpu?: Gpu;
  onProgress?: (done: number, total: number) => void;
}

/** Calibrates the model in `dir` on token ids and writes the TSV atomically; returns the scores. */
export async function calibrateToFile(r: CalibrateRun): Promise<number[][]> {
  const c = loadModelConfig(r.dir);
  const ctx = c.maxPositionEmbeddings;
  const win = r.windowTokens ?? ctx;
  if (win > ctx) {
    throw new SiftError('INVALID_ARGUMENT', `--window ${win} exceeds the model's context ${ctx}`, { param: 'window' });
  }
  // a dense engine sized for one window: every head a retrieval head, dense prefill, pages for the window
  const pageSize = 16;
  const cfg = engineConfig({
    flags: {
      maxBatchTokens: r.chunkTokens ?? 64,
      maxSeqs: 1,
      pageSize,
      maxContext: win,
      kvCacheMib: Math.max(1, Math.ceil((KvStorage.bytesPerTokenOf(c) * (win + pageSize)) / 2 ** 20) + 1),
    },
  });
  const attention = attentionConfig({ flags: { mode: 'dense', prefillMode: 'dense' } }, pageSize);
  const engine = await ModelRunner.load(r.dir, cfg, { gpu: r.gpu, attention });
  try {
    const acc = await calibrateHeads(engine, r.ids, {
      sinkTokens: r.sinkTokens,
      localTokens: r.localTokens,
      windowTokens: win,
      onProgress: r.onProgress,
    });
    const scores = acc.scores();
    const header =
      `sift calibrate: model=${path.basename(path.resolve(r.dir))} text=${r.source} tokens=${r.ids.length} ` +
      `counted=${acc.tokensCounted} window=${win} sink=${r.sinkTokens} local=${r.localTokens}; ` +
      `${c.numLayers} layers x ${c.numKvHeads} KV heads; score = mean attention mass outside sink+local (higher = retrieval)`;
    const tmp = `${r.out}.tmp-${process.pid}`;
    writeFileSync(tmp, formatHeadPattern(scores, header));
    renameSync(tmp, r.out);
    return scores;
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
      sink: { type: 'string' },
      local: { type: 'string' },
      'max-tokens': { type: 'string' },
      window: { type: 'string' },
      chunk: { type: 'string' },
    },
    'calibrate',
  );
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (!values.text || !values.out) {
    process.stderr.write(`sift calibrate: --text and --out are required\n\n${HELP}\n`);
    return 2;
  }
  const sinkTokens = intFlag(values.sink, 'sink', DEFAULT_STREAMING_SINK, 0);
  const localTokens = intFlag(values.local, 'local', DEFAULT_STREAMING_LOCAL, 1);
  const maxTokens =
    values['max-tokens'] === undefined ? Number.POSITIVE_INFINITY : intFlag(values['max-tokens'], 'max-tokens', 0, 1);
  const progress = progressLine();
  const dir = await resolveModel((values.model as string | undefined) ?? DEFAULT_MODEL, {
    autoPull: true,
    onProgress: (p) => progress.update(p.message),
  });
  progress.done();
  const file = String(values.text);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new SiftError('INVALID_ARGUMENT', `cannot read --text ${file}: ${(e as Error).message}`, { param: 'text' });
  }
  const ids = (await loadText(dir).encodePrompt(text)).slice(0, maxTokens);
  const scores = await calibrateToFile({
    dir,
    ids,
    out: String(values.out),
    sinkTokens,
    localTokens,
    windowTokens: values.window === undefined ? undefined : intFlag(values.window, 'window', 0, 1),
    chunkTokens: values.chunk === undefined ? undefined : intFlag(values.chunk, 'chunk', 64, 1),
    source: path.basename(file),
    onProgress: (d, t) => progress.update(`calibrate: ${d}/${t} tokens`),
  });
  progress.done(
    `sift calibrate: wrote ${scores.length} layers x ${scores[0]?.length ?? 0} KV head scores to ${values.out}`,
  );
  return 0;
}
