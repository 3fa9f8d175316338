/**
 * `sift bench agreement --prefill`: block-sparse prefill vs dense prefill on a real model. Per document of L tokens a
 * planted needle (32 pseudo-random token ids at a quarter of the depth) whose first 8 tokens end the prompt; each
 * runner prefills the same prompt (dense: the reference; each block-sparse variant: its selection), then decodes
 * densely, teacher-forced, the needle's other 24 tokens and then `steps` tokens the dense runner chose greedily.
 * Reported per variant: the share of those steps whose greedy token equals the dense one, the mean / max KL(dense ||
 * variant) of the next-token distributions (from the full logits rows, on the host), and the needle tokens each
 * runner predicts (argmax = the needle's next token): block-sparse prefill changes the K/V of every layer after the
 * first and the prompt's own last logits, so this measures what its skipped blocks cost the continuation.
 */
import { argmax } from '../engine/sampler.js';
import type { ModelRunner } from '../model/runner.js';
import { decodeBatch, disjointTable, prefillSeq, pseudoTokens, tableRow } from './model-steps.js';
import { type Agreement, agreement, mdTable, poolAgreement } from './stats.js';

const NEEDLE = 32;
const PREFIX = 8;

export interface PrefillAgreementOptions {
  lengths: number[];
  docs: number;
  steps: number;
  onProgress?: (msg: string) => void;
}

export interface PrefillVariant {
  name: string;
  engine: ModelRunner;
}

export interface PrefillAgreementRow {
  length: number;
  variant: string;
  pooled: Agreement;
  perDoc: Agreement[];
  /** Needle tokens predicted (argmax equal to the needle's next token) over all documents: dense, this variant. */
  needle: { dense: number; variant: number; of: number };
}

export interface PrefillAgreementResult {
  suite: 'agreement';
  mode: 'prefill';
  steps: number;
  docs: number;
  source: string;
  rows: PrefillAgreementRow[];
  notes: string[];
}

/** The prompt of document `doc` (L tokens): the needle at a quarter of the depth, its first PREFIX tokens last. */
export function needlePrompt(doc: readonly number[], L: number, needle: readonly number[]): number[] {
  const at = Math.floor(L / 4);
  const body = doc.slice(0, L - NEEDLE - PREFIX);
  return [...body.slice(0, at), ...needle, ...body.slice(at), ...needle.slice(0, PREFIX)];
}

let runId = 0;

/**
 * Logits of the prompt's last token and of each step of dense decode on one runner, fed `feed` and then (when
 * `greedy` > 0) that many of its own greedy tokens; returns the logits rows and every token fed.
 */
async function run(
  engine: ModelRunner,
  prompt: number[],
  feed: readonly number[],
  greedy = 0,
): Promise<{ logits: Float32Array[]; fed: number[] }> {
  const vocab = engine.config.vocabSize;
  const ps = engine.kv.pageSize;
  const table = disjointTable(engine, 1, Math.ceil((prompt.length + feed.length + greedy + 1) / ps));
  const id = `bench-prefill-agree-${runId++}`;
  const logits = [(await prefillSeq(engine, id, prompt, tableRow(engine, table, 0))).slice(0, vocab)];
  const fed: number[] = [];
  for (let s = 0; s < feed.length + greedy; s++) {
    const tok = s < feed.length ? feed[s] : argmax(logits[logits.length - 1]);
    fed.push(tok);
    const lg = await decodeBatch(engine, [id], [tok], [prompt.length + s], table, Number.POSITIVE_INFINITY);
    logits.push(lg.slice(0, vocab));
  }
  engine.release(id);
  return { logits, fed };
}

export async function runPrefillAgreement(
  dense: ModelRunner,
  variants: readonly PrefillVariant[],
  o: PrefillAgreementOptions,
  docsFor: (length: number) => number[][],
  source: string,
): Promise<PrefillAgreementResult> {
  const vocab = dense.config.vocabSize;
  const rows: PrefillAgreementRow[] = [];
  for (const L of o.lengths) {
    const docs = docsFor(L);
    const per = variants.map(() => [] as Agreement[]);
    const needle = variants.map(() => ({ dense: 0, variant: 0, of: 0 }));
    for (let d = 0; d < docs.length; d++) {
      const nd = pseudoTokens(NEEDLE, vocab, 7919 * (d + 1) + L);
      const prompt = needlePrompt(docs[d], L, nd);
      o.onProgress?.(`prefill agreement L=${L} doc ${d + 1}/${docs.length}: dense`);
      // the dense runner's continuation: the needle's rest, then its own greedy tokens
      const ref = await run(dense, prompt, nd.slice(PREFIX), o.steps);
      const hits = (rows: Float32Array[]) => nd.slice(PREFIX).filter((t, i) => argmax(rows[i]) === t).length;
      for (let v = 0; v < variants.length; v++) {
        o.onProgress?.(`prefill agreement L=${L} doc ${d + 1}/${docs.length}: ${variants[v].name}`);
        const got = await run(variants[v].engine, prompt, ref.fed);
        per[v].push(agreement(ref.logits, got.logits));
        needle[v].dense += hits(ref.logits);
        needle[v].variant += hits(got.logits);
        needle[v].of += NEEDLE - PREFIX;
      }
    }
    variants.forEach((v, i) => {
      rows.push({ length: L, variant: v.name, pooled: poolAgreement(per[i]), perDoc: per[i], needle: needle[i] });
    });
  }
  const notes = [
    `per document: the prompt (a ${NEEDLE}-token needle at a quarter of the depth, its first ${PREFIX} tokens at the end) prefilled by each runner, then dense decode teacher-forced on the needle's other ${NEEDLE - PREFIX} tokens and the dense runner's greedy tokens`,
    "token match = share of positions (the prompt's last and each step) whose argmax equals the dense-prefill argmax; KL(dense || block-sparse) in nats, from the full logits rows",
  ];
  return { suite: 'agreement', mode: 'prefill', steps: o.steps, docs: o.docs, source, rows, notes };
}

export function prefillAgreementTable(r: PrefillAgreementResult): string {
  return [
    `block-sparse vs dense prefill, ${r.docs} documents; source: ${r.source}`,
    '',
    mdTable(
      [
        'length',
        'prefill',
        'positions',
        'greedy token match',
        'mean KL (nats)',
        'max KL',
        'needle tokens: dense / this',
      ],
      r.rows.map((x) => [
        x.length,
        x.variant,
        x.pooled.steps,
        `${(100 * x.pooled.tokenMatch).toFixed(1)}%`,
        x.pooled.meanKl.toExponential(3),
        x.pooled.maxKl.toExponential(3),
        `${x.needle.dense} / ${x.needle.variant} of ${x.needle.of}`,
      ]),
    ),
    '',
    ...r.notes.map((n) => `- ${n}`),
  ].join('\n');
}
