/**
 * Function tools: what `tools` / `tool_choice` ask for, the grammar of a forced call, and the model's output read
 * back as OpenAI tool calls.
 *
 * - none: tools still reach the template; the output is plain content.
 * - auto (the default with tools): the model decides. Output that begins with a tool call, either Hermes / Qwen's
 *   `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks or a bare `{"name": ..., "arguments" |
 *   "parameters": {...}}` object (Llama 3.1's JSON calls) naming a known tool, becomes tool_calls; anything else is
 *   content. Whether it is a call is decided by the first non-blank character ('<' or '{'), so plain answers
 *   stream as they are generated and calls are held until they are complete.
 * - required: the output is constrained to a JSON array of one or more calls `[{"name", "arguments"}]` (one
 *   when parallel_tool_calls is false), each call's arguments constrained by its tool's parameters schema.
 * - a named function: the output is constrained to that one call.
 */
import { randomBytes } from 'node:crypto';
import { SiftError } from '../config/errors.js';
import { checkSchema } from '../text/json-schema.js';
import type { ChatCompletionRequest, ToolCall, ToolParam } from './protocol.js';
import type { OutputSpec } from './structured.js';

export type ToolMode =
  | { kind: 'none' }
  | { kind: 'auto'; tools: ToolParam[] }
  | { kind: 'required'; tools: ToolParam[]; parallel: boolean }
  | { kind: 'named'; tools: ToolParam[]; name: string };

/** The tool mode of a chat request; INVALID_ARGUMENT naming tool_choice when it cannot be served. */
export function toolMode(body: ChatCompletionRequest): ToolMode {
  const tools = body.tools ?? [];
  const choice = body.tool_choice ?? (tools.length > 0 ? 'auto' : 'none');
  if (choice === 'none') return { kind: 'none' };
  if (tools.length === 0) {
    throw new SiftError('INVALID_ARGUMENT', 'tool_choice asks for a tool call but the request has no tools', {
      param: 'tool_choice',
    });
  }
  if (choice === 'auto') return { kind: 'auto', tools };
  if (choice === 'required') return { kind: 'required', tools, parallel: body.parallel_tool_calls !== false };
  const name = choice.function.name;
  if (!tools.some((t) => t.function.name === name)) {
    throw new SiftError('INVALID_ARGUMENT', `tool_choice names the function "${name}", which is not in tools`, {
      param: 'tool_choice.function.name',
    });
  }
  return { kind: 'named', tools, name };
}

/** A call's schema: {"name": <the tool's name>, "arguments": <its parameters>}. */
function callSchema(t: ToolParam, i: number): Record<string, unknown> {
  const params = t.function.parameters ?? { type: 'object', properties: {} };
  checkSchema(params, `tools[${i}].function.parameters`);
  return {
    type: 'object',
    properties: { name: { const: t.function.name }, arguments: params },
    required: ['name', 'arguments'],
    additionalProperties: false,
  };
}

/** The grammar of a forced call (required / named); null for none and auto. */
export function toolOutputSpec(mode: ToolMode): OutputSpec | null {
  if (mode.kind === 'named') {
    const i = mode.tools.findIndex((t) => t.function.name === mode.name);
    return { schema: callSchema(mode.tools[i], i), param: `tools[${i}].function.parameters` };
  }
  if (mode.kind !== 'required') return null;
  const calls = mode.tools.map(callSchema);
  const item = calls.length === 1 ? calls[0] : { anyOf: calls };
  return {
    schema: { type: 'array', items: item, minItems: 1, ...(mode.parallel ? {} : { maxItems: 1 }) },
    param: 'tools',
  };
}

/** "call_" + 24 random alphanumerics, as OpenAI's ids look. */
export function toolCallId(): string {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return `call_${Array.from(randomBytes(24), (b) => abc[b % abc.length]).join('')}`;
}

function asCall(v: unknown, names: ReadonlySet<string>): ToolCall | null {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const o = v as Record<string, unknown>;
  const args = o.arguments ?? o.parameters ?? {};
  if (typeof o.name !== 'string' || !names.has(o.name)) return null;
  const text = typeof args === 'string' ? args : JSON.stringify(args);
  return { id: toolCallId(), type: 'function', function: { name: o.name, arguments: text } };
}

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

/** What a choice's text says: content, or tool calls (content then null unless text precedes the calls). */
export interface ToolOutput {
  content: string | null;
  calls: ToolCall[];
}

/** Reads the model's output under `mode`. Output that is not a well-formed call stays content. */
export function parseToolOutput(text: string, mode: ToolMode): ToolOutput {
  if (mode.kind === 'none') return { content: text, calls: [] };
  const names = new Set(mode.tools.map((t) => t.function.name));
  if (mode.kind === 'required' || mode.kind === 'named') {
    const v = parseJson(text);
    const list = Array.isArray(v) ? v : [v];
    const calls = list.map((x) => asCall(x, names));
    if (calls.length > 0 && calls.every((c) => c !== null)) return { content: null, calls: calls as ToolCall[] };
    return { content: text, calls: [] };
  }
  const trimmed = text.trim();
  if (trimmed.startsWith('<tool_call>')) {
    const calls: ToolCall[] = [];
    const re = /<tool_call>([\s\S]*?)(?:<\/tool_call>|$)/g;
    for (const m of trimmed.matchAll(re)) {
      const c = asCall(parseJson(m[1].trim()), names);
      if (!c) return { content: text, calls: [] };
      calls.push(c);
    }
    return calls.length ? { content: null, calls } : { content: text, calls: [] };
  }
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    const v = parseJson(trimmed);
    const list = Array.isArray(v) ? v : [v];
    const calls = list.map((x) => asCall(x, names));
    if (calls.length > 0 && calls.every((c) => c !== null)) return { content: null, calls: calls as ToolCall[] };
  }
  return { content: text, calls: [] };
}

/**
 * Whether streamed text under `mode` must be held until the end (it is, or may still turn out to be, a tool
 * call): always for forced calls; in auto mode when its first non-blank character is '<' or '{' or '['.
 */
export function holdsText(mode: ToolMode, textSoFar: string): boolean | null {
  if (mode.kind === 'none') return false;
  if (mode.kind !== 'auto') return true;
  const t = textSoFar.trimStart();
  if (t === '') return null; // undecided
  return t[0] === '<' || t[0] === '{' || t[0] === '[';
}

/**
 * What a chat request's prompt is rendered from: its messages as the template takes them, and its tools. The chat
 * route and the big-body parse worker (server/prompt-check.ts) both render this.
 */
export function chatPrompt(body: ChatCompletionRequest): { messages: unknown[]; tools: ToolParam[] } {
  return { messages: templateMessages(body.messages), tools: body.tools ?? [] };
}

/**
 * Messages for a chat template: assistant tool_calls' arguments (JSON text on the wire) as objects, as HF
 * templates expect (`tool_call.arguments | tojson`); arguments that are not JSON stay text.
 */
export function templateMessages(messages: ChatCompletionRequest['messages']): unknown[] {
  return messages.map((m) => {
    if (m.tool_calls === null) {
      const { tool_calls: _, ...rest } = m;
      return rest;
    }
    if (!Array.isArray(m.tool_calls)) return m;
    return {
      ...m,
      tool_calls: m.tool_calls.map((c) => {
        const args = parseJson(c.function.arguments);
        return { ...c, function: { ...c.function, arguments: args === undefined ? c.function.arguments : args } };
      }),
    };
  });
}
