/**
 * A ModelExecutor on the CPU, built on the plain-TS reference forward pass (tests/reference/forward.ts,
 * PagedReferenceModel): the engine core's scheduler, KV bookkeeping, sampling and request lifecycle run against it
 * without a WebGPU adapter. It keeps its own paged KV cache (f16-rounded K/V by default, as the GPU stores them),
 * checks the step invariants the GPU forward pass relies on (decode entries first, one token each, always
 * sampling; block tables covering every position), samples with the host rule (engine/sampler.ts sampleLogits, the
 * device sampler's reference), and attends densely: a decode entry whose token budget does
 * not cover its context is refused, since a dense stand-in would silently differ from the GPU's page selection there.
 * tests/engine/core-gpu.test.ts holds its greedy tokens equal to the GPU executor's.
 */
import path from 'node:path';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import { SiftError } from '../../config/errors.js';
import { sampleLogits } from '../../engine/sampler.js';
import type {
  AttentionDefaults,
  ExecuteInput,
  ExecuteOutput,
  ExecutorLimits,
  ExecutorStats,
  ModelExecutor,
  SampleSpec,
  SeqId,
} from '../../model/executor.js';
import { PagedReferenceModel } from '../reference/forward.js';

export interface CpuExecutorOptions {
  pageSize: number;
  /** Pages of the executor's KV storage. */
  numPages: number;
  maxBatchTokens: number;
  maxSeqs: number;
  maxContext: number;
  /** Default 16 (as config/attention.ts). */
  logicalPageSize?: number;
  /** Default sparse, 4096 (as config/attention.ts). */
  attention?: AttentionDefaults;
  /** Round K/V to f16 as the GPU's cache does. Default true. */
  kvF16?: boolean;
  /** Extra time per step, as a slow device (tests of timeouts and shutdown grace). Default 0. */
  stepDelayMs?: number;
}

export class CpuExecutor implements ModelExecutor {
  readonly modelName: string;
  readonly limits: ExecutorLimits;
  readonly attention: AttentionDefaults;
  /** Steps run, and the sequences released so far (for tests). */
  steps = 0;
  readonly released: SeqId[] = [];
  private readonly model: PagedReferenceModel;
  private readonly stepDelayMs: number;
  private destroyed = false;

  constructor(modelDir: string, o: CpuExecutorOptions) {
    const ckpt = openCheckpoint(modelDir);
    try {
      this.model = new PagedReferenceModel(ckpt, o.numPages, o.pageSize, { kvF16: o.kvF16 ?? true });
    } finally {
      ckpt.close();
    }
    const c = this.model.config;
    this.modelName = path.basename(modelDir);
    this.limits = {
      maxBatchTokens: o.maxBatchTokens,
      maxSeqs: o.maxSeqs,
      maxPagesPerSeq: Math.ceil(o.maxContext / o.pageSize),
      maxContext: o.maxContext,
      vocabSize: c.vocabSize,
      kv: {
        numPages: o.numPages,
        pageSize: o.pageSize,
        logicalPageSize: o.logicalPageSize ?? 16,
        bytesPerPage: 2 * c.numLayers * c.numKvHeads * c.headDim * 2 * o.pageSize, // K and V, f16
      },
      streaming: null,
      chainsSteps: true,
    };
    this.attention = o.attention ?? { mode: 'sparse', tokenBudget: 4096 };
    this.stepDelayMs = o.stepDelayMs ?? 0;
  }

  /** The latest step's sampled tokens (a chained step takes its decode tokens from here). */
  private lastTokens: ArrayLike<number> = new Int32Array(0);

  async execute(input: ExecuteInput): Promise<ExecuteOutput> {
    // a device step is a round trip: yield so timers and cancellations run between steps, as they do on the GPU
    await new Promise((r) => (this.stepDelayMs > 0 ? setTimeout(r, this.stepDelayMs) : setImmediate(r)));
    if (this.destroyed) throw new SiftError('INTERNAL', 'cpu executor: execute after destroy');
    const { entries } = input;
    const lim = this.limits;
    const fail = (msg: string) => {
      throw new SiftError('INTERNAL', `cpu executor: ${msg}`);
    };
    if (entries.length === 0 || entries.length > lim.maxSeqs) fail(`${entries.length} entries`);
    const tokens: number[] = [];
    const positions: number[] = [];
    const tokenSeq: number[] = [];
    const logitRows: number[] = [];
    const attended: number[] = [];
    let prefillSeen = false;
    entries.forEach((e, row) => {
      const n = e.tokens.length;
      if (e.kind === 'decode') {
        if (prefillSeen) fail(`decode entry ${row} after a prefill entry`);
        if (n !== 1 || !e.sample) fail(`decode entry ${row} has ${n} tokens (sample ${e.sample})`);
        const ctx = e.start + 1;
        if (ctx > e.tokenBudget) fail(`decode entry ${row}: budget ${e.tokenBudget} < context ${ctx} (dense only)`);
        attended.push(ctx);
      } else {
        prefillSeen = true;
      }
      if (n < 1) fail(`entry ${row} has no tokens`);
      if (e.streaming) fail('streaming heads are not modelled');
      if (Math.ceil((e.start + n) / lim.kv.pageSize) > e.pages.length) fail(`entry ${row}: block table too short`);
      for (let i = 0; i < n; i++) {
        let id = e.tokens[i];
        if (e.kind === 'decode' && e.chained) {
          // the previous step's sampled token, which the caller has not seen yet (a chained step)
          const prev = this.lastTokens[e.chained.row];
          if (prev === undefined || prev < 0)
            fail(`entry ${row} chains on row ${e.chained.row}, not sampled last step`);
          id = prev;
        }
        if (!Number.isInteger(id) || id < 0 || id >= lim.vocabSize) fail(`token id ${id} outside the vocabulary`);
        tokens.push(id);
        positions.push(e.start + i);
        tokenSeq.push(row);
      }
      if (e.sample) logitRows.push(tokens.length - 1);
    });
    if (tokens.length > lim.maxBatchTokens) fail(`${tokens.length} tokens > ${lim.maxBatchTokens}`);
    const logits = this.model.forward(
      tokens,
      positions,
      tokenSeq,
      entries.map((e) => e.pages),
      logitRows,
    );
    this.steps++;
    const result = sampleRows(
      entries.filter((e) => e.sample).map((e) => e.sampling),
      logits,
      lim.vocabSize,
    );
    function sampleRows(specs: (SampleSpec | undefined)[], all: Float32Array, V: number): ExecuteOutput {
      // the executor's sampling, on the host rule (engine/sampler.ts): tokens for rows with a spec, logits for the rest
      const tokens = new Int32Array(specs.length).fill(-1);
      const logitsRow = new Int32Array(specs.length).fill(-1);
      const kept: number[] = [];
      specs.forEach((s, r) => {
        const row = all.subarray(r * V, (r + 1) * V);
        if (s && !s.onHost) tokens[r] = sampleLogits(row, s);
        if (!s || s.onHost || s.returnLogits) {
          logitsRow[r] = kept.length;
          kept.push(r);
        }
      });
      const logits = new Float32Array(kept.length * V);
      kept.forEach((r, i) => {
        logits.set(all.subarray(r * V, (r + 1) * V), i * V);
      });
      // dense prefill: no key block skipped
      const prefillKeyBlocks = entries.filter((e) => e.kind === 'prefill').map(() => ({ kept: 0, total: 0 }));
      return { tokens, logits, logitsRow, tokensAttended: attended, prefillKeyBlocks };
    }
    this.lastTokens = result.tokens;
    return result;
  }

  release(seqId: SeqId): void {
    this.released.push(seqId);
  }

  stats(): ExecutorStats {
    return { selectionReselects: 0, selectionReuses: 0, streamingHeadShare: 0 };
  }

  lostError(): SiftError | null {
    return null;
  }

  destroy(): void {
    this.destroyed = true;
  }
}
