/**
 * The JSON side files of a model directory that the text side reads (tokenizer_config.json, config.json,
 * generation_config.json), and the two value shapes they use for special tokens: a token string or an
 * AddedToken-like `{content}`, and an id or a list of ids.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SiftError } from '../config/errors.js';

/** `<dir>/<name>` parsed, or {} when the file does not exist; CHECKPOINT_INVALID when it is not JSON. */
export function readModelJson(dir: string, name: string): Record<string, unknown> {
  const file = path.join(dir, name);
  if (!fs.existsSync(file)) return {};
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new SiftError('CHECKPOINT_INVALID', `${file}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
}

/** The token string of a special-token entry: "<s>" or {"content": "<s>", ...}; null otherwise. */
export function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return null;
}

/** The ids of an id field: 2 -> [2], [2, 32000] -> [2, 32000], anything else -> []. */
export function idList(v: unknown): number[] {
  if (typeof v === 'number' && Number.isInteger(v)) return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number' && Number.isInteger(x));
  return [];
}
