/**
 * The engine as the server sees it: submit a request of token ids, read its events as an async iterator,
 * cancel it. Text (tokenizing, chat templates, stop strings, detokenizing) stays with the caller; the engine
 * deals in token ids, sampling, KV pages and the GPU. checkRequest is the one place a request's ids and lengths
 * are checked, in the engine's own words (GenerationRequest field names); callers map those to their own.
 */
import { tokenBudgetProblem } from '../config/attention.js';
import { SiftError } from '../config/errors.js';
import { checkLogitsParams, type TokenMask } from './logits.js';
import type { SamplingParams } from './sampler.js';

/**
 * A per-request constraint on the generated tokens (a grammar: JSON, a JSON schema, a tool call), applied on every
 * sampling step: the engine asks it for the tokens allowed next, samples among them, and hands it the token sampled.
 * The request's stop ids end it as usual; a constraint allows them only where its output is complete, and makes
 * sure it is complete before the request's token limit.
 */
export interface TokenConstraint {
  /**
   * The tokens allowed next, given how many more tokens the request may generate (counting this one). Called once
   * per sampling step, before the step's logits exist (it runs while the model computes them).
   */
  nextMask(remaining: number): Promise<TokenMask>;
  /**
   * Takes the sampled token `id` (one the last mask allowed, or a stop id; `remaining` counts it) and returns the
   * token the request generates: `id`, or, when taking `id` would leave no way to complete the output within the
   * tokens left after it, a token of the constraint's own that begins closing the output (a stop id ends the
   * request). The constraint advances past the returned token unless it is a stop id.
   */
  take(id: number, remaining: number): Promise<number>;
  /** Frees what the constraint holds; called once when the request ends. */
  dispose(): void;
}

/** sift's own per-request attention knob (the API's extra body field `attention: {mode, token_budget}`). */
export interface AttentionRequest {
  mode: 'dense' | 'sparse';
  /** KV tokens a sparse decode step may attend to (retrieval heads). */
  tokenBudget?: number;
}

export interface GenerationRequest {
  /** Request id (the server's X-Request-Id); unique among live requests. */
  id: string;
  promptIds: number[];
  /** Most tokens to generate. */
  maxTokens: number;
  sampling: SamplingParams;
  /** Token ids that end generation with finish reason 'stop' (not emitted). */
  stopIds: readonly number[];
  /** OpenAI presence / frequency penalties in [-2, 2] (default 0). */
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** Return the chosen token's logprob and this many top alternatives (0..20); undefined = no logprobs. */
  topLogprobs?: number;
  /** Token id -> bias in [-100, 100] added to its logit before sampling (OpenAI logit_bias). */
  logitBias?: ReadonlyMap<number, number>;
  /** HF / vLLM repetition penalty over prompt and output tokens, in (0, 10]; 1 = off. */
  repetitionPenalty?: number;
  /** Drop tokens less likely than minP times the most likely one, in [0, 1]; 0 = off. */
  minP?: number;
  /** Constrains the output (a grammar); the request takes the host sampling path. */
  constraint?: TokenConstraint;
  attention?: AttentionRequest;
  /** Give up (finish reason 'timeout') this many ms after submission; undefined = no limit. */
  timeoutMs?: number;
}

export interface TokenLogprob {
  id: number;
  logprob: number;
}

/**
 * Why a request ended. Only 'length' means the request's own limit (its maxTokens, or the context) was reached:
 *   stop       a stop id was sampled
 *   length     prompt + output reached prompt + maxTokens (never cut below that: submit checks the request fits)
 *   cancelled  its handle's cancel() (the client went away, or the caller stopped it, e.g. on a stop string)
 *   timeout    its timeoutMs passed first; the output is what was generated until then
 *   shutdown   the engine shut down before it finished (shutdown's grace period ran out)
 *   error      a failed step or a device fault (`error` says which)
 */
export type FinishReason = 'stop' | 'length' | 'cancelled' | 'timeout' | 'shutdown' | 'error';

export interface RequestUsage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens served from the prefix cache (their prefill skipped). */
  cachedTokens: number;
}

/** How a request's attention ran, as its kernels ran it. */
export interface AttentionUsage {
  /**
   * Decode attention as it ran: 'sparse' when at least one decode step read fewer KV tokens than its context (page
   * selection left pages out, or a streaming head kept only its window), else 'dense': every head read every token,
   * also when the request asked for sparse but its context fit the token budget.
   */
  mode: 'dense' | 'sparse';
  /** The mode the request asked for, else the configured default. */
  requestedMode: 'dense' | 'sparse';
  /** Decode steps (tokens sampled after the first). */
  decodeSteps: number;
  /** Mean KV tokens read per decode step and (layer, KV head), streaming heads included; 0 without decode steps. */
  meanTokensAttended: number;
  /** Mean context of those steps: what dense attention reads. */
  meanContextTokens: number;
  /** Share of the causal key blocks block-sparse prefill skipped over this prompt; null when prefill was dense. */
  prefillKeyBlocksSkippedShare: number | null;
}

export type GenerationEvent =
  | { type: 'token'; id: number; logprob?: number; topLogprobs?: TokenLogprob[] }
  /** Sent while a long prompt is being prefilled (per chunk), so a server can keep the connection alive. */
  | { type: 'progress'; promptTokensDone: number; promptTokens: number }
  | {
      type: 'done';
      finishReason: FinishReason;
      usage: RequestUsage;
      attention: AttentionUsage;
      timings: { queuedMs: number; ttftMs: number | null; durationMs: number };
      /** Set when finishReason is 'error' (e.g. the GPU device was lost). */
      error?: Error;
    };

/** One submitted request. Iterate it for events; the last event is always 'done'. */
export interface RequestHandle extends AsyncIterable<GenerationEvent> {
  readonly id: string;
  /** Stops the request now and frees its KV pages; the iterator then ends with finish reason 'cancelled'. */
  cancel(): void;
}

/**
 * Whether a request needs each step's logits row on the host (engine/logits.ts, logprobs) rather than only a token id
 * from the device sampler: logprobs, a constraint's mask, a repetition penalty, min_p. logit_bias and the presence /
 * frequency penalties are an additive sparse bias the device sampler applies (engine/sampler.ts Sampler.bias).
 */
export function needsLogits(req: GenerationRequest): boolean {
  return (
    req.topLogprobs !== undefined ||
    req.constraint !== undefined ||
    (req.repetitionPenalty !== undefined && req.repetitionPenalty !== 1) ||
    (req.minP !== undefined && req.minP > 0)
  );
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvPagesTotal: number;
  kvPagesUsed: number;
  kvPagesCached: number;
  /** kvPagesUsed / kvPagesTotal in [0, 1]. */
  kvUsage: number;
  preemptions: number;
  prefixQueries: number;
  prefixHits: number;
  /** Totals since start, for metrics. */
  promptTokens: number;
  generationTokens: number;
  /**
   * Share of the KV tokens dense attention would have read that decode read, over every (layer, KV head) pair,
   * streaming heads included, as the kernels read them (1 when all dense).
   */
  attendedShare: number;
  /** Share of the causal key blocks block-sparse prefill skipped (0 when every prefill was dense). */
  prefillKeyBlocksSkippedShare: number;
  /** Whether the prefix cache is on (off for models with streaming heads: a cached prefix would skip their rings). */
  prefixCacheEnabled: boolean;
  /** Share of sparse decode steps (per sequence) that reused an earlier page selection instead of reselecting. */
  selectionReuseShare: number;
  /** Share of the model's (layer, KV head) pairs that are streaming heads (sink + local window). */
  streamingHeadShare: number;
}

export interface EngineClient {
  /** Model name as served (GET /v1/models). */
  readonly modelName: string;
  /** Context limit in tokens (prompt + completion). */
  readonly maxContext: number;
  /**
   * Tokens (prompt + completion) the KV cache can hold for one request when it runs alone; may be less than
   * maxContext when the cache is small. A request needing more can never run and is rejected at submit.
   */
  readonly kvCacheTokens: number;
  /**
   * Most requests that may wait for admission at once. Submitting more than this together (a request's choices,
   * admitted all or none) can never succeed, whatever the load.
   */
  readonly maxWaiting: number;
  /**
   * Queues a request. Throws SiftError synchronously: what checkRequest throws (CONTEXT_LENGTH_EXCEEDED,
   * INVALID_ARGUMENT, `param` a GenerationRequest field), QUEUE_FULL (429: busy, retry), DEVICE_LOST /
   * DEVICE_FAULT (503), SHUTTING_DOWN (503).
   */
  submit(req: GenerationRequest): RequestHandle;
  stats(): EngineStats;
  /**
   * The device fault (DEVICE_FAULT) or loss (DEVICE_LOST) that ended the engine, or null while it works. Once set,
   * every submit throws it and the engine stays down: a server reports itself unhealthy.
   */
  deviceFault(): SiftError | null;
  /** Stops admitting; waits up to graceMs for running requests, then cancels the rest; releases the GPU. */
  shutdown(graceMs: number): Promise<void>;
}

/** What a request is checked against. */
export interface RequestLimits {
  /** Context limit in tokens (prompt + completion). */
  maxContext: number;
  /** Tokens the KV cache holds for one request (EngineClient.kvCacheTokens); default maxContext. */
  kvCacheTokens?: number;
  /** Token ids are in [0, vocabSize). */
  vocabSize: number;
  /** Tokens per KV page: a request's token budget holds at least MIN_PAGES_KEPT pages (config/attention.ts). */
  pageSize: number;
}

/** What bounds a request's tokens, in words for its sender: the model's context, or (when smaller) the KV cache. */
export function limitDescription(limits: Pick<RequestLimits, 'maxContext' | 'kvCacheTokens'>): string {
  const context = limits.maxContext;
  const kv = limits.kvCacheTokens ?? context;
  return kv < context
    ? `the KV cache of this server holds ${kv} tokens per request (less than the model's context of ${context})`
    : `this model's maximum context length is ${context} tokens`;
}

/** The most tokens (prompt + completion) one request may hold: the context, or less when the KV cache is smaller. */
export function sequenceLimit(limits: Pick<RequestLimits, 'maxContext' | 'kvCacheTokens'>): number {
  return Math.min(limits.maxContext, limits.kvCacheTokens ?? limits.maxContext);
}

/**
 * The checks of EngineClient.submit, before anything is queued. SiftError.param names the GenerationRequest field
 * at fault: 'promptIds', 'promptIds[i]' (a token id outside the vocabulary), 'maxTokens', 'topLogprobs',
 * 'timeoutMs', 'attention.tokenBudget', 'logitBias[id]', 'repetitionPenalty', 'minP'. The prompt and the completion
 * must fit the context together, and the KV cache (a request that fits the context but not the cache could only
 * ever be cut short); CONTEXT_LENGTH_EXCEEDED names 'promptIds' when the prompt alone leaves no room for one token,
 * else 'maxTokens'. Messages are plain English without field names, fit to show to whoever sent the request.
 */
export function checkRequest(req: GenerationRequest, limits: RequestLimits): void {
  const prompt = req.promptIds;
  if (!Array.isArray(prompt) || prompt.length === 0) {
    throw new SiftError('INVALID_ARGUMENT', 'the prompt has no tokens', { param: 'promptIds' });
  }
  const V = limits.vocabSize;
  for (let i = 0; i < prompt.length; i++) {
    const id = prompt[i];
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new SiftError('INVALID_ARGUMENT', `token id ${id} is outside the vocabulary [0, ${V})`, {
        param: `promptIds[${i}]`,
      });
    }
  }
  if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1) {
    throw new SiftError('INVALID_ARGUMENT', `at least one token must be allowed (got ${req.maxTokens})`, {
      param: 'maxTokens',
    });
  }
  const limit = sequenceLimit(limits);
  const what = limitDescription(limits);
  if (prompt.length + 1 > limit) {
    throw new SiftError(
      'CONTEXT_LENGTH_EXCEEDED',
      `${what}; the request has ${prompt.length} prompt tokens and leaves no room to generate`,
      { param: 'promptIds' },
    );
  }
  if (prompt.length + req.maxTokens > limit) {
    throw new SiftError(
      'CONTEXT_LENGTH_EXCEEDED',
      `${what}; the request has ${prompt.length} prompt tokens and asks for ${req.maxTokens} completion tokens`,
      { param: 'maxTokens' },
    );
  }
  const top = req.topLogprobs;
  if (top !== undefined && (!Number.isInteger(top) || top < 0 || top > 20)) {
    throw new SiftError('INVALID_ARGUMENT', `logprob alternatives must be an integer in [0, 20] (got ${top})`, {
      param: 'topLogprobs',
    });
  }
  const budget = req.attention?.tokenBudget;
  if (budget !== undefined) {
    const problem = tokenBudgetProblem(budget, limits.pageSize);
    if (problem) {
      throw new SiftError('INVALID_ARGUMENT', `the token budget ${problem}`, { param: 'attention.tokenBudget' });
    }
  }
  checkLogitsParams(req, V);
  if (req.timeoutMs !== undefined && !(req.timeoutMs >= 0)) {
    throw new SiftError('INVALID_ARGUMENT', `the timeout must be >= 0 ms (got ${req.timeoutMs})`, {
      param: 'timeoutMs',
    });
  }
}
