/** POST /v1/chat/completions: messages rendered with the model's chat template; OpenAI's chat shapes. */
import type { TokenInfo } from '../choice.js';
import type { ChatCompletionRequest, ChatLogprobs, ChatTopLogprob } from '../protocol.js';
import type { WireFormat } from '../respond.js';
import { chatCompletionBody } from '../schemas.js';
import { generationRoute } from './generation.js';

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

export default generationRoute<ChatCompletionRequest>({
  name: 'sift-route-chat',
  url: '/v1/chat/completions',
  body: chatCompletionBody,
  idPrefix: 'chatcmpl',
  format: CHAT_FORMAT,
  async input(body, text) {
    const newName = body.max_completion_tokens !== undefined && body.max_completion_tokens !== null;
    return {
      prompts: [{ ids: await text.encodeChat(body.messages), idsParam: null }],
      names: {
        prompt: 'messages',
        maxTokens: newName ? 'max_completion_tokens' : 'max_tokens',
        topLogprobs: 'top_logprobs',
      },
      maxTokens: body.max_completion_tokens ?? body.max_tokens,
      topLogprobs: body.logprobs === true ? (body.top_logprobs ?? 0) : null,
    };
  },
});
