/**
 * Which KV heads of each layer are retrieval heads (full / sparse attention over the paged pool) and which are
 * streaming heads (sink + local window over the streaming pool's ring): DuoAttention's head pattern, LServe's split.
 *
 * Pattern file (DuoAttention's TSV, also what `sift calibrate` writes): one line per layer, one score per KV head,
 * separated by tabs or spaces; higher = retrieval. Lines starting with '#' and blank lines are skipped. Errors name the
 * file, the line and the problem.
 *
 * Choice: the streaming heads are the lowest-scoring `streamingFraction` of the heads (default LServe's: 0.5 for GQA
 * models, 0.25 for MHA). Scope 'global' (default, as DuoAttention) ranks all (layer, KV head) pairs together and
 * streams round(numLayers * numKvHeads * fraction) of them, so layers get different counts and the byte accounting
 * of kvcache/bytes.ts (which uses the same rounding) agrees exactly; scope 'per-layer' streams
 * round(numKvHeads * fraction) heads of every layer. Ties rank the earlier (layer, head) lower, deterministically.
 * Without a pattern every head is a retrieval head.
 */
import { readFileSync } from 'node:fs';
import { SiftError } from '../config/errors.js';

export interface HeadPlan {
  /** Per layer, the retrieval KV head ids (ascending). After the head permutation they are heads [0, r_l). */
  retrieval: number[][];
  /** Per layer, the streaming KV head ids (ascending). After the head permutation they are heads [r_l, nKv). */
  streaming: number[][];
}

export interface HeadPlanShape {
  numLayers: number;
  numKvHeads: number;
  /** Query heads; only decides the default fraction (GQA when numHeads > numKvHeads). */
  numHeads: number;
}

export interface HeadPlanOptions {
  /** Share of heads that stream, in [0, 1]. Default 0.5 for GQA, 0.25 for MHA (LServe). */
  streamingFraction?: number;
  /** 'global' (default): rank across layers; 'per-layer': the same count in every layer. */
  scope?: 'global' | 'per-layer';
}

/** LServe's default streaming fraction: half the heads of a GQA model, a quarter of an MHA model's. */
export function defaultStreamingFraction(shape: HeadPlanShape): number {
  return shape.numHeads > shape.numKvHeads ? 0.5 : 0.25;
}

/** Every head a retrieval head (no pattern). */
export function allRetrievalPlan(shape: { numLayers: number; numKvHeads: number }): HeadPlan {
  const all = Array.from({ length: shape.numKvHeads }, (_, h) => h);
  return {
    retrieval: Array.from({ length: shape.numLayers }, () => all.slice()),
    streaming: Array.from({ length: shape.numLayers }, () => []),
  };
}

/** Parses a head-pattern TSV into scores (numLayers, numKvHeads); `file` names the source in errors. */
export function parseHeadPattern(
  text: string,
  file: string,
  shape: { numLayers: number; numKvHeads: number },
): number[][] {
  const scores: number[][] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${file}:${i + 1}`;
    if (scores.length >= shape.numLayers) {
      throw new SiftError('CONFIG_INVALID', `${where}: more layers than the model's ${shape.numLayers}`);
    }
    const fields = line.split(/[\t ]+/);
    if (fields.length !== shape.numKvHeads) {
      throw new SiftError(
        'CONFIG_INVALID',
        `${where}: layer ${scores.length} has ${fields.length} scores; the model has ${shape.numKvHeads} KV heads`,
      );
    }
    scores.push(
      fields.map((f, h) => {
        const v = Number(f);
        if (!Number.isFinite(v) || f === '') {
          throw new SiftError('CONFIG_INVALID', `${where}: score ${h + 1} ("${f}") is not a finite number`);
        }
        return v;
      }),
    );
  }
  if (scores.length !== shape.numLayers) {
    throw new SiftError(
      'CONFIG_INVALID',
      `${file}: ${scores.length} layers of scores; the model has ${shape.numLayers}`,
    );
  }
  return scores;
}

/** Streams the lowest-scoring heads (see the file comment for fraction and scope). */
export function chooseHeadPlan(scores: number[][], shape: HeadPlanShape, opts: HeadPlanOptions = {}): HeadPlan {
  const f = opts.streamingFraction ?? defaultStreamingFraction(shape);
  if (!(f >= 0 && f <= 1)) throw new SiftError('CONFIG_INVALID', `streamingFraction ${f} must be in [0, 1]`);
  const L = shape.numLayers;
  const H = shape.numKvHeads;
  const streams = Array.from({ length: L }, () => new Array<boolean>(H).fill(false));
  const byScore = (pairs: [number, number][]) =>
    pairs.sort((a, b) => scores[a[0]][a[1]] - scores[b[0]][b[1]] || a[0] - b[0] || a[1] - b[1]);
  if ((opts.scope ?? 'global') === 'global') {
    const pairs: [number, number][] = [];
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) pairs.push([l, h]);
    const n = Math.round(L * H * f);
    for (const [l, h] of byScore(pairs).slice(0, n)) streams[l][h] = true;
  } else {
    const n = Math.round(H * f);
    for (let l = 0; l < L; l++) {
      const pairs: [number, number][] = Array.from({ length: H }, (_, h) => [l, h]);
      for (const [, h] of byScore(pairs).slice(0, n)) streams[l][h] = true;
    }
  }
  const plan: HeadPlan = { retrieval: [], streaming: [] };
  for (let l = 0; l < L; l++) {
    plan.retrieval.push([]);
    plan.streaming.push([]);
    for (let h = 0; h < H; h++) (streams[l][h] ? plan.streaming : plan.retrieval)[l].push(h);
  }
  return plan;
}

/** Reads a pattern file and chooses the plan; a missing file is CONFIG_INVALID naming it. */
export function loadHeadPlan(file: string, shape: HeadPlanShape, opts: HeadPlanOptions = {}): HeadPlan {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new SiftError('CONFIG_INVALID', `cannot read head pattern ${file}: ${(e as Error).message}`);
  }
  return chooseHeadPlan(parseHeadPattern(text, file, shape), shape, opts);
}

/** Checks that a plan covers every KV head of every layer exactly once. */
export function checkHeadPlan(plan: HeadPlan, shape: { numLayers: number; numKvHeads: number }): void {
  const bad = (why: string) => new SiftError('CONFIG_INVALID', `head plan: ${why}`);
  if (plan.retrieval.length !== shape.numLayers || plan.streaming.length !== shape.numLayers) {
    throw bad(`covers ${plan.retrieval.length}/${plan.streaming.length} layers, the model has ${shape.numLayers}`);
  }
  for (let l = 0; l < shape.numLayers; l++) {
    const heads = [...plan.retrieval[l], ...plan.streaming[l]].sort((a, b) => a - b);
    if (heads.length !== shape.numKvHeads || heads.some((h, i) => h !== i)) {
      throw bad(`layer ${l} does not list each of the ${shape.numKvHeads} KV heads exactly once`);
    }
  }
}

/** Retrieval (r_l) and streaming (s_l) head counts per layer. */
export function headCounts(plan: HeadPlan): { retrieval: number[]; streaming: number[] } {
  return { retrieval: plan.retrieval.map((x) => x.length), streaming: plan.streaming.map((x) => x.length) };
}
