/**
 * From a validated request body and its prompts to engine requests: the max_tokens default (the rest of the
 * context), sampling parameters (logit_bias, min_p, repetition_penalty too), stop strings, n choices per prompt
 * (seeded choices get seed, seed+1, ...). What
 * the engine can check (prompt and completion within the context, token ids in the vocabulary) it checks at
 * submit; params.ts names the body field at fault.
 */
import { SiftError } from '../config/errors.js';
import { type EngineClient, type GenerationRequest, sequenceLimit } from '../engine/client.js';
import type { Prompt, WireNames } from './params.js';
import type { CommonParams } from './protocol.js';

export type AttentionMode = 'dense' | 'sparse';

export interface Plan {
  /** One engine request per choice, in choice-index order. */
  requests: GenerationRequest[];
  /** The request's prompts. */
  prompts: Prompt[];
  /** Choice index -> index of its prompt (usage counts each prompt once). */
  promptOf: number[];
  /** The body fields the engine requests were built from (for error params). */
  names: WireNames;
  stops: string[];
  /** Logprob alternatives per token; null = no logprobs. */
  topLogprobs: number | null;
  stream: boolean;
  includeUsage: boolean;
  /** The mode the request asked for, else the engine's configured default. */
  attentionMode: AttentionMode;
}

export function stopList(stop: CommonParams['stop']): string[] {
  if (stop === undefined || stop === null) return [];
  const list = typeof stop === 'string' ? [stop] : stop;
  return list.filter((s) => s !== '');
}

let seq = 0;

/** OpenAI's logit_bias (token ids as string keys) as the engine's map; undefined when empty. */
export function logitBiasOf(bias: CommonParams['logit_bias']): Map<number, number> | undefined {
  if (bias === undefined || bias === null) return undefined;
  const out = new Map<number, number>();
  for (const [k, v] of Object.entries(bias)) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(k)) {
      throw new SiftError('INVALID_ARGUMENT', `logit_bias keys are token ids; got ${JSON.stringify(k)}`, {
        param: 'logit_bias',
      });
    }
    out.set(Number(k), v);
  }
  return out.size > 0 ? out : undefined;
}

export interface PlanInput {
  engine: EngineClient;
  /** The HTTP request id; engine request ids extend it. */
  requestId: string;
  prompts: Prompt[];
  names: WireNames;
  /** The requested completion limit; null = the rest of the context. */
  maxTokens: number | null | undefined;
  topLogprobs: number | null;
  stopIds: readonly number[];
  timeoutMs: number;
  /** The engine's attention mode when the body does not choose one (from the attention config). */
  defaultAttention: AttentionMode;
}

export function plan(body: CommonParams, opts: PlanInput): Plan {
  const n = body.n ?? 1;
  const requests: GenerationRequest[] = [];
  const promptOf: number[] = [];
  const attention = body.attention
    ? { mode: body.attention.mode, tokenBudget: body.attention.token_budget ?? undefined }
    : undefined;
  const logitBias = logitBiasOf(body.logit_bias);
  opts.prompts.forEach((prompt, p) => {
    // The rest of the context (or of the KV cache, when it holds less); at least one token, so a prompt that fills
    // it is the engine's to reject.
    const maxTokens = opts.maxTokens ?? Math.max(1, sequenceLimit(opts.engine) - prompt.ids.length);
    for (let j = 0; j < n; j++) {
      const seed = body.seed === undefined || body.seed === null ? null : body.seed + j;
      requests.push({
        id: `${opts.requestId}#${++seq}`,
        promptIds: prompt.ids,
        maxTokens,
        sampling: {
          temperature: body.temperature ?? 1,
          topP: body.top_p ?? 1,
          topK: body.top_k === undefined || body.top_k === null || body.top_k < 0 ? 0 : body.top_k,
          seed,
        },
        stopIds: opts.stopIds,
        presencePenalty: body.presence_penalty ?? undefined,
        frequencyPenalty: body.frequency_penalty ?? undefined,
        topLogprobs: opts.topLogprobs ?? undefined,
        logitBias,
        minP: body.min_p ?? undefined,
        repetitionPenalty: body.repetition_penalty ?? undefined,
        attention,
        timeoutMs: opts.timeoutMs > 0 ? opts.timeoutMs : undefined,
      });
      promptOf.push(p);
    }
  });
  return {
    requests,
    prompts: opts.prompts,
    promptOf,
    names: opts.names,
    stops: stopList(body.stop),
    topLogprobs: opts.topLogprobs,
    stream: body.stream === true,
    includeUsage: body.stream === true && body.stream_options?.include_usage === true,
    attentionMode: body.attention?.mode ?? opts.defaultAttention,
  };
}
