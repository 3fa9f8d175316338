/**
 * From a validated request body to engine requests: model check, context-length check, max_tokens default,
 * sampling parameters, stop strings, n choices per prompt (seeded choices get seed, seed+1, ...).
 */
import { SiftError } from '../config/errors.js';
import type { EngineClient, GenerationRequest } from '../engine/client.js';
import type { CommonParams } from './protocol.js';

export interface Plan {
  /** One engine request per choice, in choice-index order. */
  requests: GenerationRequest[];
  /** Choice index -> index of its prompt (usage counts each prompt once). */
  promptOf: number[];
  stops: string[];
  /** Logprob alternatives per token; null = no logprobs. */
  topLogprobs: number | null;
  stream: boolean;
  includeUsage: boolean;
  attentionMode: 'dense' | 'sparse';
}

export function checkModel(requested: string, served: string): void {
  if (requested !== served) {
    throw new SiftError('MODEL_NOT_FOUND', `the model "${requested}" does not exist; this server serves "${served}"`, {
      param: 'model',
    });
  }
}

export function stopList(stop: CommonParams['stop']): string[] {
  if (stop === undefined || stop === null) return [];
  const list = typeof stop === 'string' ? [stop] : stop;
  return list.filter((s) => s !== '');
}

let seq = 0;

/**
 * Builds the engine requests. `prompts` are token-id lists (one per prompt); `promptParam` names the body field
 * in context errors; `maxTokens` is the requested limit (null = the rest of the context).
 */
export function plan(
  body: CommonParams,
  opts: {
    engine: EngineClient;
    requestId: string;
    prompts: number[][];
    promptParam: string;
    maxTokens: number | null | undefined;
    topLogprobs: number | null;
    stopIds: readonly number[];
    timeoutMs: number;
  },
): Plan {
  const limit = opts.engine.maxContext;
  const n = body.n ?? 1;
  const requests: GenerationRequest[] = [];
  const promptOf: number[] = [];
  const attention = body.attention
    ? { mode: body.attention.mode, tokenBudget: body.attention.token_budget }
    : undefined;
  opts.prompts.forEach((promptIds, p) => {
    if (promptIds.length === 0)
      throw new SiftError('INVALID_ARGUMENT', `${opts.promptParam} has no tokens`, { param: opts.promptParam });
    const asked = opts.maxTokens ?? null;
    if (promptIds.length >= limit || (asked !== null && promptIds.length + asked > limit)) {
      throw new SiftError(
        'CONTEXT_LENGTH_EXCEEDED',
        `this model's maximum context length is ${limit} tokens; the request has ${promptIds.length} prompt tokens` +
          (asked === null ? ' and leaves no room to generate' : ` and asks for ${asked} completion tokens`),
        { param: asked !== null && promptIds.length < limit ? 'max_tokens' : opts.promptParam },
      );
    }
    const maxTokens = asked ?? limit - promptIds.length;
    for (let j = 0; j < n; j++) {
      const seed = body.seed === undefined || body.seed === null ? null : body.seed + j;
      requests.push({
        id: `${opts.requestId}#${++seq}`,
        promptIds,
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
        attention,
        timeoutMs: opts.timeoutMs > 0 ? opts.timeoutMs : undefined,
      });
      promptOf.push(p);
    }
  });
  return {
    requests,
    promptOf,
    stops: stopList(body.stop),
    topLogprobs: opts.topLogprobs,
    stream: body.stream === true,
    includeUsage: body.stream === true && body.stream_options?.include_usage === true,
    attentionMode: body.attention?.mode ?? 'dense',
  };
}
