/**
 * Chat messages -> prompt text, as transformers' apply_chat_template does it: the model's Jinja `chat_template`
 * (tokenizer_config.json) rendered with `messages`, `add_generation_prompt`, the special-token strings and
 * `raise_exception` (built in), via @huggingface/jinja (trim_blocks and lstrip_blocks on, as in transformers). The rendered
 * text carries its own BOS where the template puts one: encode it with `addBos: false`.
 *
 * Models without a template (base models such as stories15M) get a plain fallback: BOS followed by the user
 * messages' contents joined by newlines, so a chat request still continues the user's text.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { SiftError } from '../config/errors.js';
import { readModelJson, tokenContent } from './model-files.js';

export const CHAT_ROLES = ['system', 'developer', 'user', 'assistant', 'tool'] as const;
export type ChatRole = (typeof CHAT_ROLES)[number];

/** An OpenAI text content part. */
export interface TextPart {
  type: 'text';
  text: string;
}

/** A chat message as OpenAI's API sends it (text only). */
export interface ChatMessage {
  role: ChatRole;
  /** A string, an array of text parts, or null (assistant messages that only call tools). */
  content: string | TextPart[] | null;
  name?: string;
  tool_call_id?: string;
  tool_calls?: unknown[];
}

/** The message as the template sees it: content flattened to one string (parts joined by "\n"). */
export interface TemplateMessage {
  role: ChatRole;
  content: string | null;
  name?: string;
  tool_call_id?: string;
  tool_calls?: unknown[];
}

/** Plain fallback for models without a chat template: BOS + user contents, one per line. */
export const FALLBACK_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages if message['role'] == 'user' %}" +
  "{% if not loop.first %}{{ '\\n' }}{% endif %}{{ message['content'] }}{% endfor %}";

function bad(param: string, what: string): SiftError {
  return new SiftError('INVALID_ARGUMENT', `${param} ${what}`, { param });
}

/**
 * Checks an OpenAI `messages` array and returns it flattened for templates. Errors are INVALID_ARGUMENT naming
 * the field, e.g. `messages[2].role`.
 */
export function validateMessages(messages: unknown): TemplateMessage[] {
  if (!Array.isArray(messages)) throw bad('messages', 'must be an array of messages');
  if (messages.length === 0) throw bad('messages', 'must contain at least one message');
  return messages.map((m, i) => {
    const at = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw bad(at, 'must be an object');
    const msg = m as Record<string, unknown>;
    if (!CHAT_ROLES.includes(msg.role as ChatRole)) {
      throw bad(`${at}.role`, `must be one of ${CHAT_ROLES.join(', ')} (got ${JSON.stringify(msg.role)})`);
    }
    const role = msg.role as ChatRole;
    let content: string | null;
    if (typeof msg.content === 'string') content = msg.content;
    else if (msg.content === null || msg.content === undefined) {
      if (!(role === 'assistant' && Array.isArray(msg.tool_calls))) {
        throw bad(`${at}.content`, 'is required (a string or an array of text parts)');
      }
      content = null;
    } else if (Array.isArray(msg.content)) {
      content = msg.content
        .map((p, j) => {
          const pat = `${at}.content[${j}]`;
          if (typeof p !== 'object' || p === null) throw bad(pat, 'must be a content part object');
          const part = p as Record<string, unknown>;
          if (part.type !== 'text') {
            throw bad(`${pat}.type`, `must be "text" (got ${JSON.stringify(part.type)}); only text is supported`);
          }
          if (typeof part.text !== 'string') throw bad(`${pat}.text`, 'must be a string');
          return part.text;
        })
        .join('\n');
    } else {
      throw bad(`${at}.content`, 'must be a string or an array of text parts');
    }
    const out: TemplateMessage = { role, content };
    for (const k of ['name', 'tool_call_id'] as const) {
      if (msg[k] === undefined) continue;
      if (typeof msg[k] !== 'string') throw bad(`${at}.${k}`, 'must be a string');
      out[k] = msg[k] as string;
    }
    if (msg.tool_calls !== undefined) {
      if (!Array.isArray(msg.tool_calls)) throw bad(`${at}.tool_calls`, 'must be an array');
      out.tool_calls = msg.tool_calls;
    }
    return out;
  });
}

export interface RenderOptions {
  /** Append the assistant turn's opening so the model answers. Default true. */
  addGenerationPrompt?: boolean;
  /**
   * Function tools the model may call, as OpenAI sends them ({type: "function", function: {name, description,
   * parameters}}); templates that support tools render them (HF's `tools` variable). Default none.
   */
  tools?: readonly unknown[];
}

export interface ChatTemplateOptions {
  /** The Jinja source; null/undefined selects FALLBACK_CHAT_TEMPLATE. */
  template?: string | null;
  bosToken?: string | null;
  eosToken?: string | null;
  unkToken?: string | null;
  padToken?: string | null;
}

export class ChatTemplate {
  /** The Jinja source in use (the model's, or the fallback). */
  readonly source: string;
  /** False when the model has no chat template and the fallback is used. */
  readonly isModelTemplate: boolean;
  /** Whether the template knows the `developer` role; if not, developer messages render as `system`. */
  readonly hasDeveloperRole: boolean;
  /** What it was built from: plain data, so another thread can build the same template. */
  readonly options: ChatTemplateOptions;
  private readonly template: Template;
  private readonly specials: Record<string, string>;

  constructor(opts: ChatTemplateOptions = {}) {
    this.options = { ...opts };
    this.isModelTemplate = typeof opts.template === 'string' && opts.template.length > 0;
    this.source = this.isModelTemplate ? (opts.template as string) : FALLBACK_CHAT_TEMPLATE;
    this.hasDeveloperRole = this.source.includes('developer');
    try {
      this.template = new Template(this.source);
    } catch (e) {
      throw new SiftError('CHECKPOINT_INVALID', `chat template does not parse: ${(e as Error).message}`, { cause: e });
    }
    this.specials = {
      bos_token: opts.bosToken ?? '',
      eos_token: opts.eosToken ?? '',
      unk_token: opts.unkToken ?? '',
      pad_token: opts.padToken ?? '',
    };
  }

  /**
   * Reads a model directory's template: tokenizer_config.json `chat_template` (a string, or a list of named
   * templates of which "default" is used), else chat_template.jinja beside it (newer transformers save it there);
   * none selects the fallback. The special-token strings come from tokenizer_config.json.
   */
  static load(dir: string): ChatTemplate {
    const tc = readModelJson(dir, 'tokenizer_config.json');
    let template: string | null = null;
    if (typeof tc.chat_template === 'string') template = tc.chat_template;
    else if (Array.isArray(tc.chat_template)) {
      const named = tc.chat_template as { name?: string; template?: string }[];
      template = named.find((t) => t.name === 'default')?.template ?? null;
    }
    const jinjaFile = path.join(dir, 'chat_template.jinja');
    if (template === null && fs.existsSync(jinjaFile)) template = fs.readFileSync(jinjaFile, 'utf8');
    return new ChatTemplate({
      template,
      bosToken: tokenContent(tc.bos_token),
      eosToken: tokenContent(tc.eos_token),
      unkToken: tokenContent(tc.unk_token),
      padToken: tokenContent(tc.pad_token),
    });
  }

  /**
   * Renders validated or raw messages to prompt text; `developer` messages become `system` ones when the template
   * has no developer role (OpenAI's newer name for the system prompt). Anything the template throws, including its
   * raise_exception('...') (@huggingface/jinja's built-in, which throws an Error with that message), is
   * INVALID_ARGUMENT on `messages`: as in transformers, templates use it to reject conversations they cannot
   * express (e.g. roles that do not alternate).
   */
  render(messages: unknown, opts: RenderOptions = {}): string {
    const msgs = validateMessages(messages).map((m) =>
      m.role === 'developer' && !this.hasDeveloperRole ? { ...m, role: 'system' as const } : m,
    );
    try {
      return this.template.render({
        messages: msgs,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
        ...(opts.tools && opts.tools.length > 0 ? { tools: opts.tools } : {}),
        ...this.specials,
      });
    } catch (e) {
      throw new SiftError('INVALID_ARGUMENT', `the chat template rejected the messages: ${(e as Error).message}`, {
        param: 'messages',
        cause: e,
      });
    }
  }
}
