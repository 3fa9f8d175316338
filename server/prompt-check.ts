/**
 * A big body's prompts judged where the body is parsed (server/json-worker.ts), so that a prompt which cannot fit
 * never crosses to the main thread: a 7 MB prompt to a 256-token model would otherwise cost the main thread a
 * structured-clone copy of 7 MB in from the parse worker and another out to the tokenizer worker, each tens to
 * hundreds of ms on a busy machine, stalling /health and running streams.
 *
 * The worker applies the same check, with the same inputs, as the route would (text/prompt-bound.ts on a
 * completions prompt, or on the chat as the model's template renders it); when it refuses, the main thread gets
 * the body with every prompt text emptied (a stand-in) and the refusal beside it. A stand-in validates exactly as
 * the body would (the schema asks nothing of those strings but that they are strings), so every check before the
 * length check (schema, model, tools) answers as before; the route then throws the refusal where the length check
 * would have thrown it (PromptLimit.refused). A body the worker cannot judge (not a generation route, no model
 * yet, a template that throws) comes back whole and is judged on the main thread as before.
 */
import type { SiftError } from '../config/errors.js';
import { limitDescription, sequenceLimit } from '../engine/client.js';
import type { ChatTemplate, ChatTemplateOptions } from '../text/chat-template.js';
import { type LengthBound, type PromptLimit, promptTooLong } from '../text/prompt-bound.js';
import type { TextSide } from '../text/text.js';
import type { ChatCompletionRequest, CompletionRequest } from './protocol.js';
import { chatPrompt } from './tools.js';

/** How a route's body holds its prompts: chat messages, or a completions prompt. */
export type PromptKind = 'chat' | 'completion';

/** What a parse worker needs to judge a body's prompts: plain data, sent with the body. */
export interface PromptCheck {
  kind: PromptKind;
  /** The route's limit (promptLimit of the engine). */
  limit: { maxTokens: number; describe: string };
  bound: LengthBound;
  /** chat: the model's chat template (ChatTemplate.options). */
  template?: ChatTemplateOptions;
}

/** A refusal found by the parse worker: CONTEXT_LENGTH_EXCEEDED's message and param, and the limit judged. */
export interface PromptRefusal {
  message: string;
  param: string;
  limit: { maxTokens: number; describe: string };
}

/** The most tokens one request's prompt and completion may hold, as the generation routes judge it. */
export function promptLimit(limits: Parameters<typeof sequenceLimit>[0]): PromptLimit {
  return { maxTokens: sequenceLimit(limits), describe: limitDescription(limits) };
}

/** What the parse worker checks a `kind` body against; null when lengths bound nothing (no refusal possible). */
export function promptCheckFor(
  kind: PromptKind,
  engine: Parameters<typeof sequenceLimit>[0],
  text: TextSide,
): PromptCheck | null {
  const bound = text.tokenizer.lengthBound();
  if (bound === null) return null;
  const limit = promptLimit(engine);
  return {
    kind,
    limit: { maxTokens: limit.maxTokens, describe: limit.describe },
    bound,
    ...(kind === 'chat' ? { template: text.chat.options } : {}),
  };
}

/** A completions prompt's texts (a string, or a list of strings); null for token ids. */
export function textPrompts(prompt: unknown): string[] | null {
  if (typeof prompt === 'string') return [prompt];
  if (Array.isArray(prompt) && prompt.every((p) => typeof p === 'string')) return prompt as string[];
  return null;
}

/**
 * The refusal of `body`'s prompts under `check`, as the route would throw it, or null (they may fit, or the body
 * is not one the worker can judge: the main thread judges it then). `template` builds the chat template.
 */
export function refusePrompts(
  body: unknown,
  check: PromptCheck,
  template: (opts: ChatTemplateOptions) => ChatTemplate,
): PromptRefusal | null {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return null;
  const limit = { maxTokens: check.limit.maxTokens, describe: check.limit.describe };
  let e: SiftError | null = null;
  try {
    if (check.kind === 'completion') {
      // as completionPrompts: each text prompt in order, the first too long refuses the request
      for (const p of textPrompts((body as CompletionRequest).prompt) ?? []) {
        e = promptTooLong(p, 'prompt', limit, check.bound);
        if (e) break;
      }
    } else if (check.template) {
      // as the chat route: the messages rendered with the tools, judged on the rendered text
      const { messages, tools } = chatPrompt(body as ChatCompletionRequest);
      const rendered = template(check.template).render(messages, { tools });
      e = promptTooLong(rendered, 'messages', limit, check.bound);
    }
  } catch {
    return null; // a body the route refuses for another reason, found on the main thread as before
  }
  return e ? { message: e.message, param: e.param ?? '', limit } : null;
}

/**
 * `body` with its prompt texts emptied (chat message contents and text parts, completions prompt strings):
 * everything else, the shapes and the types included, as it was.
 */
export function withoutPrompts(body: Record<string, unknown>, kind: PromptKind): Record<string, unknown> {
  if (kind === 'completion') {
    const p = body.prompt;
    return { ...body, prompt: typeof p === 'string' ? '' : (p as string[]).map(() => '') };
  }
  const messages = (body as { messages: unknown[] }).messages.map((m) => {
    if (m === null || typeof m !== 'object') return m;
    const c = (m as { content?: unknown }).content;
    if (typeof c === 'string') return { ...m, content: '' };
    if (!Array.isArray(c)) return m;
    return {
      ...m,
      content: c.map((part) =>
        part !== null && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string'
          ? { ...part, text: '' }
          : part,
      ),
    };
  });
  return { ...body, messages };
}
