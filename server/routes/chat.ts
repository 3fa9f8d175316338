/**
 * POST /v1/chat/completions: messages rendered with the model's chat template (tools included); OpenAI's chat
 * shapes. With tools, a choice's output may come back as tool_calls (server/tools.ts): forced calls (tool_choice
 * required or a named function) are constrained by a grammar and always parse; in auto mode output that opens
 * with a call is held and read at the end. Tool calls finish with finish_reason "tool_calls".
 */
import type { TokenInfo } from '../choice.js';
import type { ChatCompletionRequest, ChatLogprobs, ChatTopLogprob, FinishReasonWire } from '../protocol.js';
import type { WireFormat } from '../respond.js';
import { chatCompletionBody } from '../schemas.js';
import { chatPrompt, holdsText, parseToolOutput, type ToolMode, toolMode, toolOutputSpec } from '../tools.js';
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
  finishChoice: (index, reason) => [{ index, delta: {}, logprobs: null, finish_reason: reason }],
  fullChoice: (index, r, tokens) => ({
    index,
    message: { role: 'assistant', content: r.text },
    logprobs: chatLogprobs(tokens),
    finish_reason: r.finishReason,
  }),
};

/**
 * The chat format of one request with tools: text that is (or may be) a call is held per choice and read at the
 * end; calls go out as one delta with every call (id, name, complete arguments), then the finish chunk.
 */
function toolFormat(mode: ToolMode): WireFormat {
  const held = new Map<number, string>();
  const streaming = new Set<number>();
  const finishReason = (reason: FinishReasonWire, calls: number) => (calls > 0 ? 'tool_calls' : reason);
  return {
    ...CHAT_FORMAT,
    deltaChoice(index, text, tokens) {
      if (streaming.has(index)) return CHAT_FORMAT.deltaChoice(index, text, tokens);
      const so = (held.get(index) ?? '') + text;
      const hold = holdsText(mode, so);
      if (hold === false) {
        streaming.add(index);
        held.delete(index);
        return CHAT_FORMAT.deltaChoice(index, so, tokens);
      }
      held.set(index, so);
      return null;
    },
    finishChoice(index, reason) {
      const text = held.get(index);
      held.delete(index);
      if (streaming.has(index) || text === undefined) return CHAT_FORMAT.finishChoice(index, reason);
      const out = parseToolOutput(text, mode);
      const chunks: unknown[] = [];
      if (out.calls.length > 0) {
        const calls = out.calls.map((c, i) => ({ index: i, ...c }));
        chunks.push({ index, delta: { tool_calls: calls }, logprobs: null, finish_reason: null });
      } else if (text) {
        chunks.push({ index, delta: { content: text }, logprobs: null, finish_reason: null });
      }
      chunks.push({ index, delta: {}, logprobs: null, finish_reason: finishReason(reason, out.calls.length) });
      return chunks;
    },
    fullChoice(index, r, tokens) {
      const out = parseToolOutput(r.text, mode);
      if (out.calls.length === 0) return CHAT_FORMAT.fullChoice(index, r, tokens);
      return {
        index,
        message: { role: 'assistant', content: out.content, tool_calls: out.calls },
        logprobs: null,
        finish_reason: 'tool_calls',
      };
    },
  };
}

export default generationRoute<ChatCompletionRequest>({
  name: 'sift-route-chat',
  url: '/v1/chat/completions',
  body: chatCompletionBody,
  idPrefix: 'chatcmpl',
  prompts: 'chat',
  format: CHAT_FORMAT,
  async input(body, text, limit) {
    const newName = body.max_completion_tokens !== undefined && body.max_completion_tokens !== null;
    const mode = toolMode(body);
    const forced = toolOutputSpec(mode);
    const { messages, tools } = chatPrompt(body);
    return {
      prompts: [{ ids: await text.encodeChat(messages, limit, { tools }), idsParam: null }],
      names: {
        prompt: 'messages',
        maxTokens: newName ? 'max_completion_tokens' : 'max_tokens',
        topLogprobs: 'top_logprobs',
      },
      maxTokens: body.max_completion_tokens ?? body.max_tokens,
      explicitMaxTokens: (body.max_completion_tokens ?? body.max_tokens) != null,
      topLogprobs: body.logprobs === true ? (body.top_logprobs ?? 0) : null,
      ...(forced ? { output: forced } : {}),
      ...(mode.kind === 'none' ? {} : { format: toolFormat(mode) }),
    };
  },
});
