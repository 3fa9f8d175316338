/** POST /v1/completions: a text prompt, a list of them, token ids, or a list of token-id lists. */
import type { PromptLimit, TextSide } from '../../text/text.js';
import type { TokenInfo } from '../choice.js';
import type { Prompt } from '../params.js';
import { textPrompts } from '../prompt-check.js';
import type { CompletionLogprobs, CompletionRequest } from '../protocol.js';
import type { WireFormat } from '../respond.js';
import { completionBody } from '../schemas.js';
import { generationRoute } from './generation.js';

/**
 * The prompt in its four forms as token-id lists (text prompts get BOS, and are refused before tokenizing when
 * they cannot fit `limit`); the engine checks the ids.
 */
export async function completionPrompts(
  text: TextSide,
  prompt: CompletionRequest['prompt'],
  limit?: PromptLimit,
): Promise<Prompt[]> {
  const texts = textPrompts(prompt);
  if (texts) return Promise.all(texts.map(async (p) => ({ ids: await text.encodePrompt(p, limit), idsParam: null })));
  const ids = prompt as number[] | number[][];
  if (ids.every((p) => typeof p === 'number')) return [{ ids: ids as number[], idsParam: 'prompt' }];
  return (ids as number[][]).map((ids, i) => ({ ids, idsParam: `prompt[${i}]` }));
}

function completionLogprobs(tokens: TokenInfo[] | null, base: number): CompletionLogprobs | null {
  if (tokens === null) return null;
  return {
    tokens: tokens.map((t) => t.token),
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: tokens.map((t) => Object.fromEntries(t.top.map((a) => [a.token, a.logprob]))),
    text_offset: tokens.map((t) => base + t.offset),
  };
}

const COMPLETION_FORMAT: WireFormat = {
  object: 'text_completion',
  chunkObject: 'text_completion',
  startChoice: () => null,
  deltaChoice: (index, text, tokens) => ({ index, text, logprobs: completionLogprobs(tokens, 0), finish_reason: null }),
  finishChoice: (index, reason) => [{ index, text: '', logprobs: null, finish_reason: reason }],
  fullChoice: (index, r, tokens) => ({
    index,
    text: r.text,
    logprobs: completionLogprobs(tokens, 0),
    finish_reason: r.finishReason,
  }),
};

export default generationRoute<CompletionRequest>({
  name: 'sift-route-completions',
  url: '/v1/completions',
  body: completionBody,
  idPrefix: 'cmpl',
  prompts: 'completion',
  format: COMPLETION_FORMAT,
  async input(body, text, limit) {
    return {
      prompts: await completionPrompts(text, body.prompt, limit),
      names: { prompt: 'prompt', maxTokens: 'max_tokens', topLogprobs: 'logprobs' },
      maxTokens: body.max_tokens ?? 16,
      explicitMaxTokens: true,
      topLogprobs: body.logprobs === undefined || body.logprobs === null ? null : body.logprobs,
    };
  },
});
