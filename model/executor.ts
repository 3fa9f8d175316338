/**
 * The seam between the engine core (engine/) and the model: a ModelExecutor runs one scheduled step over its own
 * KV storage and per-sequence attention state and hands back what the core samples from. The GPU implementation
 * is model/runner.ts (ModelRunner); tests run the core on a CPU executor built on the reference forward pass.
 *
 * Types only (no WebGPU, no values): engine/ imports nothing else from model/.
 *
 * A step's input says per entry, once, what kind of work it is, as the scheduler decided it:
 *   decode  one new token of a sequence past its prompt; its attention goes through page selection within the
 *           entry's token budget (every page when the context fits); it always samples;
 *   prefill a chunk of prompt tokens, or of prompt + output tokens recomputed after a preemption; dense or
 *           block-sparse attention; samples only when it reaches the end of the sequence's tokens.
 * Entries are in block-table row order with every decode entry before every prefill entry (the forward pass
 * asserts it).
 */

/** A sequence's id, as the scheduler, the KV cache manager and the executor know it. */
export type SeqId = string | number;

/** Streaming heads' part of an entry (models with streaming heads only). */
export interface StreamingEntry {
  /** Sink pages of the sequence in the streaming pool (kvcache StreamingTable.sinkPages). */
  sinkPages: ArrayLike<number>;
  /** Ring pages of the sequence in the streaming pool, in ring order. */
  ringPages: ArrayLike<number>;
  /**
   * (n) per new token, the flat streaming-pool slot (page * pageSize + offset) its K/V is written to, or null when
   * the ring recycles that position before the chunk ends (kvcache's StreamingPool.slotFor).
   */
  slots: ArrayLike<number | null>;
}

/**
 * Additive logit bias of one step, sparse (token id -> delta): a request's logit_bias plus OpenAI's presence /
 * frequency penalties. Ids are distinct.
 */
export interface LogitBias {
  ids: ArrayLike<number>;
  deltas: ArrayLike<number>;
}

/**
 * How one sampling entry picks its next token this step. The rule, the same on the host (engine/sampler.ts
 * sampleLogits, the reference) and on the device (shaders/sample.wgsl): logits l = raw + bias; temperature 0 takes
 * the argmax (lowest id on ties); else weights w = exp((l - max l) / temperature), the kept set is every token
 * when topK = 0 and topP = 1, else the first min(topK, V) tokens in the order (l descending, id ascending), cut to
 * the shortest prefix whose weight reaches topP of theirs; the token is the first of the kept set, in id order
 * without top-k / top-p and in that order with them, whose cumulative weight exceeds u times the kept set's weight.
 */
export interface SampleSpec {
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  /** The step's uniform draw in [0, 1) from the request's seeded stream (unused when temperature is 0). */
  u: number;
  bias?: LogitBias;
  /** Also return the raw logits row (logprobs are computed from it on the host). */
  returnLogits?: boolean;
  /**
   * Sample on the host: the executor returns the raw logits row and token -1 (for rules the device does not run,
   * e.g. a grammar's token mask).
   */
  onHost?: boolean;
}

interface EntryBase {
  seqId: SeqId;
  /** Position of the first new token (the K/V of positions [0, start) is in the cache). */
  start: number;
  /** (n) new token ids, at positions start .. start + n - 1. */
  tokens: ArrayLike<number>;
  /** Block table of the sequence: the physical page of each logical page, covering positions < start + n. */
  pages: ArrayLike<number>;
  /** The last new token's logits give the next token. */
  sample: boolean;
  /**
   * With `sample`: how the executor samples the token. Absent: the executor returns the logits row and token -1
   * (the caller samples; benchmarks and calibration read the logits).
   */
  sampling?: SampleSpec;
  /**
   * The caller needs this entry's logits row (= sampling.onHost or sampling.returnLogits: a host-side rule such as a
   * grammar's token mask, a repetition penalty or min_p, or logprobs). Only with `sample`.
   */
  needsLogits?: boolean;
  streaming?: StreamingEntry;
}

/** One new token of a sequence past its prompt, attending through page selection within `tokenBudget`. */
export interface DecodeEntry extends EntryBase {
  kind: 'decode';
  /** KV tokens the step may attend to per retrieval head; Infinity (or >= the context) = every page. */
  tokenBudget: number;
  /**
   * The token is the one the executor sampled for sampling row `row` of the PREVIOUS execute call, which the
   * caller has not seen yet (`tokens[0]` is a placeholder): the step was scheduled while that one ran, and the
   * executor takes the token where it is (on the device). That row must have been sampled by the executor.
   */
  chained?: { row: number };
}

/** A chunk of prompt (or recomputed) tokens. */
export interface PrefillEntry extends EntryBase {
  kind: 'prefill';
}

export type StepEntry = DecodeEntry | PrefillEntry;

/** One step's work, as prepareInputs (engine/prepare-inputs.ts) builds it from the schedule. */
export interface ExecuteInput {
  /** Scheduled sequences in block-table row order: every decode entry first. */
  entries: readonly StepEntry[];
}

/** What one step returns. */
export interface ExecuteOutput {
  /**
   * (R) per entry that samples, in entry order: the token the executor sampled, or -1 where it returned the logits
   * for the caller to sample (no `sampling`, or `sampling.onHost`).
   */
  tokens: Int32Array;
  /** (L, vocabSize) f32: the raw logits rows returned (see `logitsRow`), in entry order. */
  logits: Float32Array;
  /** (R) per entry that samples: its row of `logits`, or -1 when none was returned. */
  logitsRow: Int32Array;
  /** Per decode entry, in entry order: KV tokens its attention read per retrieval head. */
  tokensAttended: readonly number[];
  /**
   * Per prefill entry, in entry order: the causal key blocks of its query blocks in block-sparse prefill of retrieval
   * heads, and how many of them the block lists kept; { kept: 0, total: 0 } when its prefill was dense.
   */
  prefillKeyBlocks: readonly { kept: number; total: number }[];
}

/** Sizes the engine core schedules within. */
export interface ExecutorLimits {
  /** Most new tokens in one step. */
  maxBatchTokens: number;
  /** Most entries in one step (each may sample). */
  maxSeqs: number;
  /** Block-table row length: the most pages one sequence may hold. */
  maxPagesPerSeq: number;
  /** Most tokens (prompt + output) per sequence. */
  maxContext: number;
  vocabSize: number;
  /** The paged KV pool (the executor's storage; the core's KV cache manager hands out its pages). */
  kv: { numPages: number; pageSize: number; logicalPageSize: number; bytesPerPage: number };
  /** The streaming heads' pool (sink + ring pages per sequence), or null when no KV head streams. */
  streaming: { numPages: number; sinkTokens: number; localTokens: number } | null;
  /**
   * The executor samples SampleSpec rows itself (without `onHost` or a bias), so a decode step may chain on the
   * previous step's tokens before they are read back (DecodeEntry.chained).
   */
  chainsSteps: boolean;
}

/** The attention a request gets when it does not ask (config `attention.mode` / `attention.tokenBudget`). */
export interface AttentionDefaults {
  mode: 'dense' | 'sparse';
  tokenBudget: number;
}

/** Figures the core reports as metrics. */
export interface ExecutorStats {
  /** Sparse decode steps (per sequence) that recomputed / reused their page selection, since start. */
  selectionReselects: number;
  selectionReuses: number;
  /** Share of the model's (layer, KV head) pairs that are streaming heads. */
  streamingHeadShare: number;
}

export interface ModelExecutor {
  /** The model's name as served (its directory name). */
  readonly modelName: string;
  readonly limits: ExecutorLimits;
  readonly attention: AttentionDefaults;
  /**
   * Runs one step: writes the entries' K/V through their block tables and returns the sampling entries' tokens
   * and logits. Rejects with SiftError DEVICE_LOST when the device is gone. Calls are executed in call order, and
   * a call may be made before the previous one's result is awaited (its decode entries then chain on the previous
   * step's sampled tokens: DecodeEntry.chained).
   */
  execute(input: ExecuteInput): Promise<ExecuteOutput>;
  /** Forgets a finished or preempted sequence's per-sequence state (its page selection). */
  release(seqId: SeqId): void;
  stats(): ExecutorStats;
  /** The error that ended the device, or null while it works. */
  lostError(): Error | null;
  /** Frees everything (device buffers, the device when the executor owns it). */
  destroy(): void;
}
