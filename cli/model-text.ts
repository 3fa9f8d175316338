/**
 * The text side of a model directory as the commands that generate use it (apart from cli/common.ts, which every
 * command loads: the tokenizer binding is slow to load and most commands need none).
 */
import { llama2cStopIds } from '../checkpoint/llama2c.js';
import { loadText, type TextSide } from '../text/text.js';

/** The text side of a model directory, with the stop ids its origin adds (llama2.c models end at BOS). */
export function loadModelText(dir: string): TextSide {
  return loadText(dir, { extraStopIds: llama2cStopIds(dir) });
}
