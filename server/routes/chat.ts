/** POST /v1/chat/completions: messages rendered with the model's chat template; OpenAI's chat shapes. */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import '../context.js';
import type { TokenInfo } from '../choice.js';
import { checkModel, plan } from '../plan.js';
import { definePlugin } from '../plugin.js';
import type { ChatCompletionRequest, ChatLogprobs, ChatTopLogprob } from '../protocol.js';
import { respond, type WireFormat } from '../respond.js';
import { chatCompletionBody } from '../schemas.js';

const utf8 = (s: string) => [...Buffer.from(s, 'utf8')];
const top = (t: { token: string; logprob: number }): ChatTopLogprob => ({
  token: t.token,
  logprob: t.logprob,
  bytes: utf8(t.token),
});

function chatLogprobs(tokens: TokenInfo[] | null): ChatLogprobs | null {
  if (tokens === null) return null;
  return { content: tokens.map((t) => ({ ...top(t), top_logprobs: t.top.map(top) })) };
}

const CHAT_FORMAT: WireFormat = {
  object: 'chat.completion',
  chunkObject: 'chat.completion.chunk',
  startChoice: (index) => ({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }),
  deltaChoice: (index, text, tokens) => ({
    index,
    delta: { content: text },
    logprobs: chatLogprobs(tokens),
    finish_reason: null,
  }),
  finishChoice: (index, reason) => ({ index, delta: {}, logprobs: null, finish_reason: reason }),
  fullChoice: (index, r, tokens) => ({
    index,
    message: { role: 'assistant', content: r.text },
    logprobs: chatLogprobs(tokens),
    finish_reason: r.finishReason,
  }),
};

async function chatRoute(app: FastifyInstance): Promise<void> {
  app.post<{ Body: ChatCompletionRequest }>(
    '/v1/chat/completions',
    { schema: { body: chatCompletionBody } },
    async (request, reply) => {
      const startedAt = performance.now();
      const { state, metrics, config } = app.sift;
      const { engine, text, modelName } = state.require();
      const body = request.body;
      checkModel(body.model, modelName);
      const promptIds = await text.encodeChat(body.messages);
      const wantLogprobs = body.logprobs === true;
      const p = plan(body, {
        engine,
        requestId: request.id,
        prompts: [promptIds],
        promptParam: 'messages',
        maxTokens: body.max_completion_tokens ?? body.max_tokens,
        topLogprobs: wantLogprobs ? (body.top_logprobs ?? 0) : null,
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
          id: `chatcmpl-${randomUUID().replace(/-/g, '')}`,
          maxWaiting: config.maxWaiting,
          keepAliveMs: config.keepAliveMs,
          startedAt,
        },
        p,
        CHAT_FORMAT,
      );
      return reply;
    },
  );
}

export default definePlugin(chatRoute, {
  name: 'sift-route-chat',
  dependencies: ['sift-errors', 'sift-context'],
  encapsulate: true,
});
