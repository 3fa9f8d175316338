/**
 * Engine field names -> OpenAI `param` names. The engine checks what it is given in its own words (the
 * GenerationRequest fields: promptIds, promptIds[i], maxTokens, topLogprobs, sampling.temperature, ...); this is
 * the one place the server turns those into the body fields the client sent, so an error body names `messages`,
 * `prompt[1][3]` or `max_completion_tokens`.
 */
import { isSiftError, SiftError } from '../config/errors.js';

/** Which body fields a route fed the engine from. */
export interface WireNames {
  /** The body field of the prompt: "messages" or "prompt". */
  prompt: string;
  /** The body field the completion limit came from: "max_tokens" or "max_completion_tokens". */
  maxTokens: string;
  /** The body field the number of logprob alternatives came from: "top_logprobs" or "logprobs". */
  topLogprobs: string;
}

/** One prompt of a request, as token ids. */
export interface Prompt {
  ids: number[];
  /**
   * Where the client wrote these ids, when it sent token ids itself ("prompt", or "prompt[2]" in a list of
   * lists): an id the engine rejects is then named by its index there. null for text and chat prompts.
   */
  idsParam: string | null;
}

/** Engine fields whose body field has the same name in every route. */
const SAME_EVERYWHERE: Record<string, string> = {
  'sampling.temperature': 'temperature',
  'sampling.topP': 'top_p',
  'sampling.topK': 'top_k',
  'sampling.seed': 'seed',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  minP: 'min_p',
  repetitionPenalty: 'repetition_penalty',
  'attention.mode': 'attention.mode',
  'attention.tokenBudget': 'attention.token_budget',
};

/** The body field for an engine field of a request built from `prompt`; null when no body field matches. */
export function wireParam(param: string | null, names: WireNames, prompt: Prompt): string | null {
  if (param === null) return null;
  if (param === 'promptIds') return names.prompt;
  const id = /^promptIds\[(\d+)\]$/.exec(param);
  if (id) return prompt.idsParam === null ? names.prompt : `${prompt.idsParam}[${id[1]}]`;
  if (param === 'maxTokens') return names.maxTokens;
  if (param === 'topLogprobs') return names.topLogprobs;
  const bias = /^logitBias\[(\d+)\]$/.exec(param);
  if (bias) return `logit_bias.${bias[1]}`;
  return SAME_EVERYWHERE[param] ?? null;
}

/** `e` with its param in the request's words (other errors pass through unchanged). */
export function inWireWords(e: unknown, names: WireNames, prompt: Prompt): unknown {
  if (!isSiftError(e) || e.param === null) return e;
  const param = wireParam(e.param, names, prompt);
  if (param === e.param) return e;
  return new SiftError(e.code, e.message, { ...(param === null ? {} : { param }), cause: e });
}
