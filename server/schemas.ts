/**
 * JSON schemas of the POST bodies. fastify compiles them (ajv, no type coercion) before the handler runs;
 * a failure becomes a 400 whose `param` names the field (`temperature`, `messages[0].role`), see errors.ts.
 * Every optional field also accepts null (meaning "not given"), as OpenAI does for its own.
 */
import { ATTENTION_SPEC } from '../config/attention.js';

const nullable = (s: Record<string, unknown>) => ({ anyOf: [s, { type: 'null' }] });

const common = {
  model: { type: 'string', minLength: 1 },
  max_tokens: nullable({ type: 'integer', minimum: 1 }),
  temperature: nullable({ type: 'number', minimum: 0, maximum: 2 }),
  top_p: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 1 }),
  top_k: nullable({ type: 'integer', minimum: -1 }),
  seed: nullable({ type: 'integer', minimum: -9007199254740991, maximum: 9007199254740991 }),
  stop: nullable({
    anyOf: [{ type: 'string' }, { type: 'array', maxItems: 4, items: { type: 'string' } }],
  }),
  n: nullable({ type: 'integer', minimum: 1, maximum: 16 }),
  presence_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
  frequency_penalty: nullable({ type: 'number', minimum: -2, maximum: 2 }),
  stream: nullable({ type: 'boolean' }),
  stream_options: nullable({
    type: 'object',
    properties: { include_usage: nullable({ type: 'boolean' }) },
  }),
  user: nullable({ type: 'string' }),
  logit_bias: nullable({ type: 'object', additionalProperties: { type: 'number', minimum: -100, maximum: 100 } }),
  min_p: nullable({ type: 'number', minimum: 0, maximum: 1 }),
  repetition_penalty: nullable({ type: 'number', exclusiveMinimum: 0, maximum: 10 }),
  response_format: nullable({
    type: 'object',
    required: ['type'],
    properties: {
      type: { type: 'string', enum: ['text', 'json_object', 'json_schema'] },
      json_schema: {
        type: 'object',
        required: ['name'],
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 64 },
          description: { type: 'string' },
          schema: { type: 'object' },
          strict: nullable({ type: 'boolean' }),
        },
      },
    },
  }),
  attention: nullable({
    type: 'object',
    required: ['mode'],
    additionalProperties: false,
    properties: {
      mode: { type: 'string', enum: ['dense', 'sparse'] },
      // the upper bound is the config's (attention.tokenBudget); a budget at or above the context means dense
      token_budget: nullable({ type: 'integer', minimum: 1, maximum: ATTENTION_SPEC.tokenBudget.max }),
    },
  }),
} as const;

const textPart = {
  type: 'object',
  required: ['type'],
  properties: { type: { type: 'string' }, text: { type: 'string' } },
} as const;

/** A function tool (OpenAI `tools[i]`). */
const tool = {
  type: 'object',
  required: ['type', 'function'],
  properties: {
    type: { type: 'string', enum: ['function'] },
    function: {
      type: 'object',
      required: ['name'],
      properties: {
        name: { type: 'string', pattern: '^[a-zA-Z0-9_-]{1,64}$' },
        description: { type: 'string' },
        parameters: { type: 'object' },
        strict: nullable({ type: 'boolean' }),
      },
    },
  },
} as const;

/** A tool call of an earlier assistant message. */
const toolCall = {
  type: 'object',
  required: ['function'],
  properties: {
    id: { type: 'string' },
    type: { type: 'string', enum: ['function'] },
    function: {
      type: 'object',
      required: ['name', 'arguments'],
      properties: { name: { type: 'string' }, arguments: { type: 'string' } },
    },
  },
} as const;

export const chatCompletionBody = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    ...common,
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
          content: { anyOf: [{ type: 'string' }, { type: 'array', items: textPart }, { type: 'null' }] },
          name: { type: 'string' },
          tool_call_id: { type: 'string' },
          tool_calls: nullable({ type: 'array', items: toolCall }),
        },
      },
    },
    tools: nullable({ type: 'array', maxItems: 128, items: tool }),
    tool_choice: nullable({
      anyOf: [
        { type: 'string', enum: ['none', 'auto', 'required'] },
        {
          type: 'object',
          required: ['type', 'function'],
          properties: {
            type: { type: 'string', enum: ['function'] },
            function: { type: 'object', required: ['name'], properties: { name: { type: 'string' } } },
          },
        },
      ],
    }),
    parallel_tool_calls: nullable({ type: 'boolean' }),
    max_completion_tokens: nullable({ type: 'integer', minimum: 1 }),
    logprobs: nullable({ type: 'boolean' }),
    top_logprobs: nullable({ type: 'integer', minimum: 0, maximum: 20 }),
  },
} as const;

const tokenIds = { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } } as const;

export const completionBody = {
  type: 'object',
  required: ['model', 'prompt'],
  properties: {
    ...common,
    prompt: {
      anyOf: [
        { type: 'string' },
        { type: 'array', minItems: 1, items: { type: 'string' } },
        tokenIds,
        { type: 'array', minItems: 1, items: tokenIds },
      ],
    },
    logprobs: nullable({ type: 'integer', minimum: 0, maximum: 20 }),
  },
} as const;

/** POST /tokenize (llama-server's shape). */
export const tokenizeBody = {
  type: 'object',
  required: ['content'],
  properties: {
    content: { type: 'string' },
    /** Prepend BOS as a plain prompt gets it. Default false. */
    add_special: { type: 'boolean' },
    /** Return {id, piece} objects instead of bare ids. Default false. */
    with_pieces: { type: 'boolean' },
  },
} as const;

/** POST /detokenize (llama-server's shape). */
export const detokenizeBody = {
  type: 'object',
  required: ['tokens'],
  properties: { tokens: { type: 'array', items: { type: 'integer', minimum: 0 } } },
} as const;
