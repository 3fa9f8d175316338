/**
 * Structured output: a request's response_format (json_object, json_schema) or its forced tool call becomes an
 * output schema, and each engine request of the plan gets its own grammar constraint over the model's vocabulary
 * (text/grammar.ts), checked against the request's token limit. Schemas outside the supported subset are refused
 * naming the keywords (text/json-schema.ts).
 */
import { SiftError } from '../config/errors.js';
import type { TokenConstraint } from '../engine/client.js';
import { checkSchema } from '../text/json-schema.js';
import type { TextSide } from '../text/text.js';
import type { Plan } from './plan.js';
import type { ResponseFormat } from './protocol.js';

/** The grammar a request's output must follow. */
export interface OutputSpec {
  /** A JSON schema, or null for any JSON object. */
  schema: Record<string, unknown> | null;
  /** The body field the schema came from (for errors). */
  param: string;
}

/** The output spec of a response_format; null for text (or none). */
export function responseFormatSpec(rf: ResponseFormat | null | undefined): OutputSpec | null {
  if (!rf || rf.type === 'text') return null;
  if (rf.type === 'json_object') return { schema: null, param: 'response_format' };
  const js = (rf as { json_schema?: { schema?: Record<string, unknown> } }).json_schema;
  if (!js) {
    throw new SiftError('INVALID_ARGUMENT', 'response_format json_schema needs a json_schema object', {
      param: 'response_format.json_schema',
    });
  }
  const param = 'response_format.json_schema.schema';
  const schema = js.schema ?? {};
  checkSchema(schema, param);
  return { schema, param };
}

/**
 * Gives every engine request of `plan` its constraint for `spec`. A request whose token limit is below the shortest
 * document the schema allows is refused (the limit's body field; without max_tokens, the prompt's).
 */
export async function attachConstraints(
  plan: Plan,
  spec: OutputSpec,
  text: TextSide,
  explicitMax: boolean,
): Promise<void> {
  const made: TokenConstraint[] = [];
  try {
    for (const r of plan.requests) {
      const c = await text.grammars.constraint(spec.schema).catch((e: unknown) => {
        throw e instanceof SiftError && e.param === null ? new SiftError(e.code, e.message, { param: spec.param }) : e;
      });
      made.push(c);
      if (c.minTokens > r.maxTokens) {
        const param = explicitMax ? plan.names.maxTokens : plan.names.prompt;
        throw new SiftError(
          explicitMax ? 'INVALID_ARGUMENT' : 'CONTEXT_LENGTH_EXCEEDED',
          `the shortest output ${spec.param} allows takes ${c.minTokens} tokens; the request leaves room for ${r.maxTokens}`,
          { param },
        );
      }
      r.constraint = c;
    }
  } catch (e) {
    for (const c of made) c.dispose();
    for (const r of plan.requests) r.constraint = undefined;
    throw e;
  }
}
