/**
 * `sift calibrate --model M --text FILE --out heads.tsv [--sink 128 --local 256 --max-tokens N --window N]`:
 * scores every (layer, KV head) by the mean share of its attention mass outside sink + local over the text
 * (model/calibration.ts) and writes the head-pattern TSV that model/head-plan.ts reads (higher = retrieval).
 */
import { renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadModelConfig } from '../checkpoint/config.js';
import { DEFAULT_MODEL } from '../checkpoint/models.js';
import { SiftError } from '../config/errors.js';
import { intFlag } from '../config/flags.js';
import { calibrateHeads, formatHeadPattern } from '../model/calibration.js';
import type { Gpu } from '../shaders/runtime.js';
import {
  DEFAULT_LOCAL_TOKENS as DEFAULT_STREAMING_LOCAL,
  DEFAULT_SINK_TOKENS as DEFAULT_STREAMING_SINK,
} from '../shaders/streaming_attention.js';
import { loadText } from '../text/text.js';
import { modelAndText, parse, progressLine } from './common.js';
import { loadWindowEngine, WINDOW_FLAG_DEFS, windowFlags, windowTokensFor } from './window-engine.js';

/** Windows at least this long get LServe's sink 128 + local 256; smaller ones a window scaled to them. */
const WIDE_WINDOW = 4 * (DEFAULT_STREAMING_SINK + DEFAULT_STREAMING_LOCAL);

const HELP = `usage: sift calibrate [--model NAME|DIR] --text FILE --out FILE [options]

Scores each (layer, KV head) by the mean share of attention mass outside the streaming window (sink + local) over
the text, and writes a head-pattern TSV (one line per layer, one score per KV head, higher = retrieval head).

  --model NAME|DIR   a known model name (default ${DEFAULT_MODEL}) or an HF directory
  --text FILE        text to run (UTF-8); long texts are taken in windows of the model's context
  --out FILE         where to write the TSV
  --sink N           sink tokens (default ${DEFAULT_STREAMING_SINK}, as LServe, when the window holds at least
                     ${WIDE_WINDOW} tokens; else window / 64, at least 4: 4 on a 256-token model)
  --local N          local window tokens (default ${DEFAULT_STREAMING_LOCAL}, or window / 8 on a smaller window: 32)
  --max-tokens N     use at most N tokens of the text (default all)
  --window N         tokens per window (default and maximum: the model's context length)
Only tokens past sink + local are scored, so sink + local must be smaller than the window and than the text;
both are checked before the model loads. Use the same --sink/--local with serve or generate.
  --chunk N          tokens per forward chunk (default 64)`;

/**
 * The streaming window to score against, fitted to the calibration window `win` when not given, and checked: only
 * tokens past sink + local are scored, so sink + local must leave room in the window and in the text.
 */
export function calibrationWindow(
  win: number,
  textTokens: number,
  given: { sink?: number; local?: number },
): { sink: number; local: number } {
  const wide = win >= WIDE_WINDOW;
  const sink = given.sink ?? (wide ? DEFAULT_STREAMING_SINK : Math.max(4, Math.floor(win / 64)));
  const local = given.local ?? (wide ? DEFAULT_STREAMING_LOCAL : Math.max(16, Math.floor(win / 8)));
  const fix = (n: number) => {
    const s = Math.max(1, Math.floor(n / 64));
    const l = Math.max(1, Math.floor(n / 8));
    return `--sink and --local with sink + local < ${n}${s + l < n ? ` (e.g. --sink ${s} --local ${l})` : ''}`;
  };
  if (sink + local >= win) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `sink ${sink} + local ${local} fill the ${win}-token window (the model's context, or --window): no token lies past them to score; pass ${fix(win)}`,
      { param: 'sink' },
    );
  }
  if (sink + local >= textTokens) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `the text has ${textTokens} tokens, none past sink ${sink} + local ${local} to score: use a longer --text, or ${fix(textTokens)}`,
      { param: 'text' },
    );
  }
  return { sink, local };
}

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
  const win = windowTokensFor(c, r.windowTokens);
  const engine = await loadWindowEngine(r.dir, c, win, r.chunkTokens, r.gpu);
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
      ...WINDOW_FLAG_DEFS,
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
  const givenSink = values.sink === undefined ? undefined : intFlag(values.sink, 'sink', 0, 0);
  const givenLocal = values.local === undefined ? undefined : intFlag(values.local, 'local', 0, 1);
  const { windowTokens: givenWindow, chunkTokens, maxTokens } = windowFlags(values);
  const file = String(values.text);
  const progress = progressLine();
  const { dir, text } = await modelAndText(values.model as string | undefined, file, progress);
  const ids = (await loadText(dir).encodePrompt(text)).slice(0, maxTokens);
  // everything that needs no model is checked before it loads (~7 s on the default model)
  const win = windowTokensFor(loadModelConfig(dir), givenWindow);
  const { sink: sinkTokens, local: localTokens } = calibrationWindow(win, ids.length, {
    sink: givenSink,
    local: givenLocal,
  });
  if (givenSink === undefined || givenLocal === undefined) {
    progress.done(
      `sift calibrate: window of ${win} tokens, scoring attention outside sink ${sinkTokens} + local ${localTokens}`,
    );
  }
  const scores = await calibrateToFile({
    dir,
    ids,
    out: String(values.out),
    sinkTokens,
    localTokens,
    windowTokens: win,
    chunkTokens,
    source: path.basename(file),
    onProgress: (d, t) => progress.update(`calibrate: ${d}/${t} tokens`),
  });
  progress.done(
    `sift calibrate: wrote ${scores.length} layers x ${scores[0]?.length ?? 0} KV head scores to ${values.out}`,
  );
  return 0;
}
