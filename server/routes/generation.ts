/**
 * The generation route factory. Chat and completions differ only in their body schema, in how the body becomes
 * prompts and limits (and which body fields those came from), and in the shape of a choice on the wire; the path
 * of a request is the same: model check -> prompts -> plan (engine requests) -> output constraints
 * (response_format, forced tool calls) -> submit and respond. Body fields the schema does not know are accepted
 * and named in one warning line per request (as vLLM does), so a client's newer field is never silently lost.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import '../context.js';
import { SiftError } from '../../config/errors.js';
import type { PromptLimit, TextSide } from '../../text/text.js';
import type { Prompt, WireNames } from '../params.js';
import { plan } from '../plan.js';
import { definePlugin } from '../plugin.js';
import { type PromptKind, type PromptRefusal, promptLimit } from '../prompt-check.js';
import type { CommonParams } from '../protocol.js';
import { respond, type WireFormat } from '../respond.js';
import { attachConstraints, type OutputSpec, responseFormatSpec } from '../structured.js';

/** What a route reads from its body besides the common fields. */
export interface GenerationInput {
  prompts: Prompt[];
  /** The body fields the prompt and limits came from, for error params. */
  names: WireNames;
  /** The requested completion limit; null/undefined = the rest of the context. */
  maxTokens: number | null | undefined;
  /** Whether the client set the limit (else it is the route's default). */
  explicitMaxTokens: boolean;
  /** Logprob alternatives per token; null = no logprobs. */
  topLogprobs: number | null;
  /** The grammar the output must follow when the route decides it (a forced tool call); else response_format's. */
  output?: OutputSpec | null;
  /** The wire format of this request's choices, when it differs from the route's (tool calls). */
  format?: WireFormat;
}

export interface GenerationRouteSpec<B extends CommonParams> {
  /** Plugin name. */
  name: string;
  url: string;
  /** JSON schema of the body (schemas.ts); fastify validates before the handler runs. */
  body: Record<string, unknown>;
  /** Response id prefix: "chatcmpl" or "cmpl". */
  idPrefix: string;
  /** How the body holds its prompts: a big body's are judged where it is parsed (server/prompt-check.ts). */
  prompts: PromptKind;
  /**
   * Tokenizes the body's prompts; text prompts too long for `limit` (judged from their length) are refused before
   * tokenizing (TextSide's PromptLimit), so a 7 MB prompt to a 256-token model is a 400 at once.
   */
  input(body: B, text: TextSide, limit: PromptLimit): Promise<GenerationInput>;
  format: WireFormat;
}

function checkModel(requested: string, served: string): void {
  if (requested !== served) {
    throw new SiftError('MODEL_NOT_FOUND', `the model "${requested}" does not exist; this server serves "${served}"`, {
      param: 'model',
    });
  }
}

/**
 * The route's prompt limit, carrying the refusal the parse worker found for a big body (its prompts are then
 * stand-ins: the refusal is thrown where the length check would be, after every check before it).
 */
function refusedLimit(refusal: PromptRefusal | null, limit: PromptLimit): PromptLimit {
  if (refusal === null) return limit;
  if (refusal.limit.maxTokens !== limit.maxTokens || refusal.limit.describe !== limit.describe) {
    // the engine is installed once; a body judged against another limit cannot be judged again (its prompts are gone)
    throw new SiftError('INTERNAL', "a request body was judged against a limit that is not the engine's");
  }
  return {
    ...limit,
    refused: new SiftError('CONTEXT_LENGTH_EXCEEDED', refusal.message, { param: refusal.param }),
  };
}

/** A POST route for `spec`, as a fastify plugin. */
export function generationRoute<B extends CommonParams>(spec: GenerationRouteSpec<B>): FastifyPluginAsync {
  async function route(app: FastifyInstance): Promise<void> {
    app.post(spec.url, { schema: { body: spec.body }, config: { prompts: spec.prompts } }, async (request, reply) => {
      const startedAt = performance.now();
      const { state, metrics, config, attentionMode } = app.sift;
      const { engine, text, modelName } = state.require();
      const body = request.body as B; // validated against spec.body
      checkModel(body.model, modelName);
      const known = (spec.body as { properties?: Record<string, unknown> }).properties ?? {};
      const unknown = Object.keys(body).filter((k) => !(k in known));
      if (unknown.length > 0) {
        request.log.warn({ fields: unknown }, `ignoring unknown request fields: ${unknown.join(', ')}`);
      }
      const input = await spec.input(body, text, refusedLimit(request.promptRefusal, promptLimit(engine)));
      const output = input.output === undefined ? responseFormatSpec(body.response_format) : input.output;
      const planned = plan(body, {
        engine,
        requestId: request.id,
        ...input,
        stopIds: text.stopIds,
        timeoutMs: config.requestTimeoutMs,
        defaultAttention: attentionMode,
      });
      if (output) await attachConstraints(planned, output, text, input.explicitMaxTokens);
      await respond(
        {
          request,
          reply,
          state,
          metrics,
          text,
          modelName,
          id: `${spec.idPrefix}-${randomUUID().replace(/-/g, '')}`,
          keepAliveMs: config.keepAliveMs,
          startedAt,
        },
        planned,
        input.format ?? spec.format,
      );
      return reply;
    });
  }
  return definePlugin(route, { name: spec.name, dependencies: ['sift-errors', 'sift-context'], encapsulate: true });
}
