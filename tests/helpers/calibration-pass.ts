/**
 * Shared by the calibration-statistics tests (tests/model/imatrix.test.ts, tests/model/gram.test.ts): synthetic
 * checkpoints in a temporary directory, random documents, and the reference of the GPU's windowed pass (every
 * window of a document run as its own sequence through tests/reference/forward.ts, each linear input handed over).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import type { Checkpoint } from '../../checkpoint/checkpoint.js';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { referenceForward } from '../reference/forward.js';
import type { LinearInputHook } from '../reference/forward-layer.js';
import type { Rng } from './rng.js';

/** A temporary directory removed after the file's tests, and a writer of named synthetic checkpoints into it. */
export function syntheticRoot(prefix: string): { root: string; synthetic: (name: string) => string } {
  const root = mkdtempSync(path.join(os.tmpdir(), prefix));
  after(() => rmSync(root, { recursive: true, force: true }));
  const synthetic = (name: string) => {
    const dir = path.join(root, name);
    const variant = SYNTHETIC_VARIANTS.find((v) => v.name === name);
    if (!variant) throw new Error(`no synthetic variant ${name}`);
    writeSyntheticCheckpoint(dir, variant);
    return dir;
  };
  return { root, synthetic };
}

/** Random token ids, one document per length. */
export function randomDocs(rng: Rng, vocabSize: number, lengths: number[]): number[][] {
  return lengths.map((n) => Array.from({ length: n }, () => rng.int(0, vocabSize - 1)));
}

/**
 * Runs every window of `win` tokens of every document through the reference forward pass (f16 KV, as the GPU's),
 * handing each linear layer's input to `onLinearInput`; returns the tokens run.
 */
export function referenceWindows(
  ckpt: Checkpoint,
  docs: number[][],
  win: number,
  onLinearInput: LinearInputHook,
): number {
  let tokens = 0;
  for (const d of docs) {
    for (let s = 0; s < d.length; s += win) {
      const w = d.slice(s, s + win);
      tokens += w.length;
      referenceForward(ckpt, w, { kvF16: true, onLinearInput });
    }
  }
  return tokens;
}
