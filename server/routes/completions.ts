/** POST /v1/completions: a text prompt, a list of them, token ids, or a list of token-id lists. */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import '../context.js';
import { SiftError } from '../../config/errors.js';
import type { TextSide } from '../../text/text.js';
import type { TokenInfo } from '../choice.js';
import { checkModel, plan } from '../plan.js';
import { definePlugin } from '../plugin.js';
import type { CompletionLogprobs, CompletionRequest } from '../protocol.js';
import { respond, type WireFormat } from '../respond.js';
import { completionBody } from '../schemas.js';

/** The prompt in its four forms, as token-id lists (text prompts get BOS). */
export async function promptIds(text: TextSide, prompt: CompletionRequest['prompt']): Promise<number[][]> {
  if (typeof prompt === 'string') return [await text.encodePrompt(prompt)];
  if (prompt.every((p) => typeof p === 'string'))
    return Promise.all((prompt as string[]).map((p) => text.encodePrompt(p)));
  const lists = prompt.every((p) => typeof p === 'number') ? [prompt as number[]] : (prompt as number[][]);
  const vocab = text.tokenizer.vocabSize;
  lists.forEach((ids, i) => {
    const bad = ids.findIndex((id) => id >= vocab);
    if (bad !== -1) {
      const param = lists === prompt ? `prompt[${i}][${bad}]` : `prompt[${bad}]`;
      throw new SiftError(
        'INVALID_ARGUMENT',
        `${param}: token id ${ids[bad]} is outside the vocabulary (size ${vocab})`,
        { param },
      );
    }
  });
  return lists;
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
  finishChoice: (index, reason) => ({ index, text: '', logprobs: null, finish_reason: reason }),
  fullChoice: (index, r, tokens) => ({
    index,
    text: r.text,
    logprobs: completionLogprobs(tokens, 0),
    finish_reason: r.finishReason,
  }),
};

async function completionsRoute(app: FastifyInstance): Promise<void> {
  app.post<{ Body: CompletionRequest }>(
    '/v1/completions',
    { schema: { body: completionBody } },
    async (request, reply) => {
      const startedAt = performance.now();
      const { state, metrics, config } = app.sift;
      const { engine, text, modelName } = state.require();
      const body = request.body;
      checkModel(body.model, modelName);
      const prompts = await promptIds(text, body.prompt);
      const p = plan(body, {
        engine,
        requestId: request.id,
        prompts,
        promptParam: 'prompt',
        maxTokens: body.max_tokens ?? 16,
        topLogprobs: body.logprobs === undefined || body.logprobs === null ? null : body.logprobs,
        stopIds: text.stopIds,
        timeoutMs: config.requestTimeoutMs,
      });
      await respond(
        {
          request,
          reply,
          state,
          metrics,
          text,
          modelName,
          id: `cmpl-${randomUUID().replace(/-/g, '')}`,
          maxWaiting: config.maxWaiting,
          keepAliveMs: config.keepAliveMs,
          startedAt,
        },
        p,
        COMPLETION_FORMAT,
      );
      return reply;
    },
  );
}

export default definePlugin(completionsRoute, {
  name: 'sift-route-completions',
  dependencies: ['sift-errors', 'sift-context'],
  encapsulate: true,
});
