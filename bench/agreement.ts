/**
 * `sift bench agreement`: sparse vs dense decode quality on a real model over long inputs. Per document: a dense
 * prefill, then `steps` greedy decode steps with dense attention (the reference tokens and logits); then, per token
 * budget, the same steps over the same prefilled prefix with sparse attention, teacher-forced on the dense tokens so
 * both runs see the same context. Reported per budget: the share of steps whose greedy token equals the dense one,
 * and the mean / max KL(dense || sparse) of the next-token distributions (computed on the host from the two logits
 * rows: measurement, not model compute).
 *
 * Documents: windows of a tokenized text file, or (default) concatenations of stories the model itself samples from
 * BOS with different seeds (a pool generated once in one batched decode, shuffled per document).
 */
import { SiftError } from '../config/errors.js';
import { argmax, Sampler } from '../engine/sampler.js';
import { tokensAttended } from '../model/attention/budget.js';
import type { ModelRunner } from '../model/runner.js';
import { Rng } from '../util/rng.js';
import { decodeBatch, disjointTable, prefillSeq, tableRow } from './model-steps.js';
import { type Agreement, agreement, mdTable, poolAgreement } from './stats.js';

export interface AgreementOptions {
  budgets: number[];
  lengths: number[];
  docs: number;
  steps: number;
  onProgress?: (msg: string) => void;
}

export interface AgreementResult {
  suite: 'agreement';
  steps: number;
  docs: number;
  source: string;
  rows: { length: number; budget: number; tokensAttended: number; pooled: Agreement; perDoc: Agreement[] }[];
  notes: string[];
}

/**
 * Samples `n` stories from BOS (temperature 1, seeds seed..seed+n-1) in one batched decode of up to `maxTokens`
 * tokens each; a story ends at BOS/EOS. Returns the token ids without the leading BOS.
 */
export async function sampleStories(
  engine: ModelRunner,
  n: number,
  maxTokens: number,
  seed: number,
  onProgress?: (m: string) => void,
): Promise<number[][]> {
  const bos = 1;
  const stop = new Set([1, 2]);
  const ps = engine.kv.pageSize;
  const table = disjointTable(engine, n, Math.ceil((maxTokens + 1) / ps));
  const ids = Array.from({ length: n }, (_, i) => `bench-story-${seed}-${i}`);
  const samplers = ids.map((_, i) => new Sampler({ temperature: 1, topK: 0, topP: 0.95, seed: seed + i }));
  const stories: number[][] = ids.map(() => []);
  const done = ids.map(() => false);
  let tokens = Array(n).fill(bos);
  const vocab = engine.config.vocabSize;
  for (let pos = 0; pos < maxTokens && done.some((d) => !d); pos++) {
    if (pos % 16 === 0) onProgress?.(`sampling ${n} stories: token ${pos}/${maxTokens}`);
    const logits = await decodeBatch(engine, ids, tokens, Array(n).fill(pos), table, Number.POSITIVE_INFINITY);
    tokens = tokens.map((_, i) => {
      const t = samplers[i].sample(logits.subarray(i * vocab, (i + 1) * vocab));
      if (!done[i]) {
        if (stop.has(t)) done[i] = true;
        else stories[i].push(t);
      }
      return t;
    });
  }
  for (const id of ids) engine.release(id);
  return stories.filter((s) => s.length > 0);
}

/** A document of `length` tokens: BOS + stories in a seeded order (cycling the pool if needed). */
export function storyDocument(stories: readonly number[][], length: number, seed: number): number[] {
  if (!stories.length) throw new SiftError('INTERNAL', 'no stories to build a document from');
  const rng = new Rng(seed);
  const doc: number[] = [];
  while (doc.length < length) {
    const order = stories.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = rng.int(0, i);
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (const i of order) {
      doc.push(1, ...stories[i]);
      if (doc.length >= length) break;
    }
  }
  return doc.slice(0, length);
}

/** `docs` windows of `length` tokens spread over a tokenized text (BOS first). */
export function textDocuments(ids: readonly number[], length: number, docs: number): number[][] {
  if (ids.length < length - 1)
    throw new SiftError('INVALID_ARGUMENT', `--text has ${ids.length} tokens; a document needs ${length}`);
  const span = ids.length - (length - 1);
  return Array.from({ length: docs }, (_, d) => {
    const start = docs > 1 ? Math.floor((d * span) / docs) : 0;
    return [1, ...ids.slice(start, start + length - 1)];
  });
}

let runId = 0;

export async function runAgreement(
  engine: ModelRunner,
  o: AgreementOptions,
  docsFor: (length: number) => number[][],
  source: string,
): Promise<AgreementResult> {
  const ps = engine.kv.pageSize;
  const vocab = engine.config.vocabSize;
  const rows: AgreementResult['rows'] = [];
  for (const L of o.lengths) {
    const docs = docsFor(L);
    const table = disjointTable(engine, 1, Math.ceil((L + o.steps) / ps));
    const row0 = tableRow(engine, table, 0);
    const per = new Map<number, Agreement[]>(o.budgets.map((b) => [b, []]));
    for (let d = 0; d < docs.length; d++) {
      const doc = docs[d];
      // dense reference: greedy tokens and their logits
      o.onProgress?.(`agreement L=${L} doc ${d + 1}/${docs.length}: dense prefill`);
      const idD = `bench-agree-${runId++}`;
      let logits = await prefillSeq(engine, idD, doc, row0);
      const first = argmax(logits);
      const feed: number[] = [];
      const ref: Float32Array[] = [];
      let tok = first;
      for (let s = 0; s < o.steps; s++) {
        feed.push(tok);
        logits = await decodeBatch(engine, [idD], [tok], [L + s], table, Number.POSITIVE_INFINITY);
        ref.push(logits.slice(0, vocab));
        tok = argmax(logits);
      }
      engine.release(idD);
      for (const budget of o.budgets) {
        o.onProgress?.(`agreement L=${L} doc ${d + 1}/${docs.length}: budget ${budget}`);
        // The prefix K/V (positions < L) and its digests are the dense prefill's: decode steps only write positions
        // >= L, each before reading them, so every run re-writes what it reads. A fresh id selects on its first step.
        const id = `bench-agree-${runId++}`;
        const got: Float32Array[] = [];
        for (let s = 0; s < o.steps; s++) {
          const lg = await decodeBatch(engine, [id], [feed[s]], [L + s], table, budget);
          got.push(lg.slice(0, vocab));
        }
        engine.release(id);
        per.get(budget)!.push(agreement(ref, got));
      }
    }
    for (const budget of o.budgets) {
      const perDoc = per.get(budget)!;
      rows.push({
        length: L,
        budget,
        tokensAttended: tokensAttended(L + 1, budget, ps),
        pooled: poolAgreement(perDoc),
        perDoc,
      });
    }
  }
  const notes = [
    `per document: dense prefill, ${o.steps} greedy dense decode steps; per budget ${o.steps} sparse steps over the same prefilled prefix, fed the dense tokens (teacher-forced)`,
    'token match = share of steps whose argmax equals the dense argmax; KL(dense || sparse) in nats, from the full logits rows',
  ];
  const trained = engine.config.maxPositionEmbeddings;
  if (Math.max(...o.lengths) > trained) {
    notes.push(
      `the model's trained context is ${trained} tokens; past it the model still reads its context but its predictions are not trained there: this measures how closely sparse attention reproduces dense, not task quality`,
    );
  }
  return { suite: 'agreement', steps: o.steps, docs: o.docs, source, rows, notes };
}

export function agreementTable(r: AgreementResult): string {
  return [
    `sparse vs dense decode, ${r.docs} documents x ${r.steps} steps each; source: ${r.source}`,
    '',
    mdTable(
      ['length', 'budget', 'KV tokens read/head', 'greedy token match', 'mean KL (nats)', 'max KL', 'per-doc match'],
      r.rows.map((x) => [
        x.length,
        x.budget,
        x.tokensAttended,
        `${(100 * x.pooled.tokenMatch).toFixed(1)}%`,
        x.pooled.meanKl.toExponential(3),
        x.pooled.maxKl.toExponential(3),
        x.perDoc.map((p) => `${(100 * p.tokenMatch).toFixed(0)}%`).join(' '),
      ]),
    ),
    '',
    ...r.notes.map((n) => `- ${n}`),
  ].join('\n');
}
