/**
 * `sift bench forward` (the default suite): forward-pass throughput. Prefill tokens/s (the prompt in chunks of
 * maxBatchTokens, timed to the last chunk's logits), decode tokens/s of one sequence (one token per step, logits
 * read back, as generation does), and batched decode: B sequences (disjoint pages, each prefilled to the context)
 * advanced by one token each in ONE forward call, aggregate tokens/s = B / step time.
 */
import { SiftError } from '../config/errors.js';
import { argmax } from '../engine/sampler.js';
import type { ModelRunner } from '../model/runner.js';
import { decodeBatch, disjointTable, prefillSeq, pseudoTokens, tableRow } from './model-steps.js';
import { mapStat, mdTable, type Stat, stat } from './stats.js';

export interface ForwardBenchOptions {
  promptLens: number[];
  contexts: number[];
  decodeTokens: number;
  repeat: number;
  /** Batch sizes for batched decode (empty: only the single-sequence decode). */
  batches: number[];
  onProgress?: (msg: string) => void;
}

export interface ForwardBenchResult {
  suite: 'forward';
  repeat: number;
  tokenBudget: number;
  prefill: { promptLen: number; ms: Stat; tokensPerS: Stat }[];
  decode: { context: number; steps: number; msPerToken: Stat; tokensPerS: Stat }[];
  batch: { batch: number; context: number; steps: number; msPerStep: Stat; tokensPerS: Stat }[];
}

let runId = 0;

export async function runForwardBench(engine: ModelRunner, o: ForwardBenchOptions): Promise<ForwardBenchResult> {
  const vocab = engine.config.vocabSize;
  const ps = engine.kv.pageSize;
  const maxLen = Math.min(engine.maxContext, engine.kv.numPages * ps);
  const budget = engine.tokenBudget();
  const one = disjointTable(engine, 1, Math.ceil(maxLen / ps));
  const prefill: ForwardBenchResult['prefill'] = [];
  for (const len of o.promptLens) {
    if (len > maxLen)
      throw new SiftError(
        'INVALID_ARGUMENT',
        `--prompt-len ${len} exceeds what the KV cache / context holds (${maxLen})`,
      );
    const ids = pseudoTokens(len, vocab, len);
    const times: number[] = [];
    for (let r = 0; r <= o.repeat; r++) {
      o.onProgress?.(`prefill ${len}: run ${r}/${o.repeat}`);
      const t0 = performance.now();
      await prefillSeq(engine, 'bench-prefill', ids, one);
      if (r > 0) times.push(performance.now() - t0);
    }
    engine.release('bench-prefill');
    const ms = stat(times);
    prefill.push({ promptLen: len, ms, tokensPerS: mapStat(ms, (t) => (len / t) * 1000) });
  }
  const decode: ForwardBenchResult['decode'] = [];
  for (const ctx of o.contexts) {
    if (ctx + o.decodeTokens > maxLen)
      throw new SiftError('INVALID_ARGUMENT', `--context ${ctx} + --decode-tokens ${o.decodeTokens} exceeds ${maxLen}`);
    o.onProgress?.(`decode @${ctx}: prefill`);
    const id = `bench-decode-${runId++}`;
    let logits = await prefillSeq(engine, id, pseudoTokens(ctx, vocab, 1), one);
    const per: number[] = [];
    for (let r = 0; r <= o.repeat; r++) {
      o.onProgress?.(`decode @${ctx}: run ${r}/${o.repeat}`);
      const t0 = performance.now();
      for (let s = 0; s < o.decodeTokens; s++)
        logits = await decodeBatch(engine, [id], [argmax(logits)], [ctx + s], one, budget);
      if (r > 0) per.push((performance.now() - t0) / o.decodeTokens);
    }
    engine.release(id);
    const ms = stat(per);
    decode.push({ context: ctx, steps: o.decodeTokens, msPerToken: ms, tokensPerS: mapStat(ms, (t) => 1000 / t) });
  }
  const batch: ForwardBenchResult['batch'] = [];
  for (const B of o.batches) {
    if (
      B > engine.forwardPass.maxSeqs ||
      B > engine.forwardPass.maxLogitRows ||
      B > engine.forwardPass.maxBatchTokens
    ) {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `--batch ${B} exceeds the engine's max sequences / logit rows (raise --max-seqs)`,
      );
    }
    for (const ctx of o.contexts) {
      const pagesPer = Math.ceil((ctx + o.decodeTokens) / ps);
      const table = disjointTable(engine, B, pagesPer);
      const ids = Array.from({ length: B }, () => `bench-batch-${runId++}`);
      const tokens: number[] = [];
      for (let i = 0; i < B; i++) {
        o.onProgress?.(`batch ${B} @${ctx}: prefill sequence ${i + 1}/${B}`);
        tokens.push(
          argmax(await prefillSeq(engine, ids[i], pseudoTokens(ctx, vocab, 100 + i), tableRow(engine, table, i))),
        );
      }
      const per: number[] = [];
      for (let r = 0; r <= o.repeat; r++) {
        o.onProgress?.(`batch ${B} @${ctx}: run ${r}/${o.repeat}`);
        const t0 = performance.now();
        for (let s = 0; s < o.decodeTokens; s++) {
          const logits = await decodeBatch(engine, ids, tokens, Array(B).fill(ctx + s), table, budget);
          for (let i = 0; i < B; i++) tokens[i] = argmax(logits.subarray(i * vocab, (i + 1) * vocab));
        }
        if (r > 0) per.push((performance.now() - t0) / o.decodeTokens);
      }
      for (const id of ids) engine.release(id);
      const ms = stat(per);
      batch.push({
        batch: B,
        context: ctx,
        steps: o.decodeTokens,
        msPerStep: ms,
        tokensPerS: mapStat(ms, (t) => (B * 1000) / t),
      });
    }
  }
  return { suite: 'forward', repeat: o.repeat, tokenBudget: budget, prefill, decode, batch };
}

const f1 = (x: number) => x.toFixed(1);

export function forwardTable(
  r: Pick<ForwardBenchResult, 'prefill' | 'decode'> & Partial<Pick<ForwardBenchResult, 'batch'>>,
): string {
  return mdTable(
    ['phase', 'tokens', 'ms (median)', 'tokens/s (median)', 'tokens/s (min..max)'],
    [
      ...r.prefill.map((p) => [
        'prefill',
        p.promptLen,
        f1(p.ms.median),
        f1(p.tokensPerS.median),
        `${f1(p.tokensPerS.min)}..${f1(p.tokensPerS.max)}`,
      ]),
      ...r.decode.map((d) => [
        `decode @${d.context}`,
        '1/step',
        f1(d.msPerToken.median),
        f1(d.tokensPerS.median),
        `${f1(d.tokensPerS.min)}..${f1(d.tokensPerS.max)}`,
      ]),
      ...(r.batch ?? []).map((b) => [
        `decode batch ${b.batch} @${b.context}`,
        `${b.batch}/step`,
        f1(b.msPerStep.median),
        f1(b.tokensPerS.median),
        `${f1(b.tokensPerS.min)}..${f1(b.tokensPerS.max)}`,
      ]),
    ],
  );
}
