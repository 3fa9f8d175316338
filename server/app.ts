/**
 * The app factory: a fastify instance with the OpenAI routes, errors, auth and metrics wired, not listening
 * (server.ts listens). The engine may be null while the model loads: `app.sift.state.ready(engine, text)`
 * installs it later, and until then /health and the generation routes answer 503.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import { attentionConfig } from '../config/attention.js';
import { SiftError } from '../config/errors.js';
import { allowedOriginList, apiKeyList, replicaIdOf, type ServerConfig, serverConfig } from '../config/server.js';
import type { EngineClient } from '../engine/client.js';
import type { TextSide } from '../text/text.js';
import auth from './auth.js';
import body from './body.js';
import { EngineState } from './engine-state.js';
import './context.js';
import cors from './cors.js';
import errors from './errors.js';
import { ServerMetrics } from './metrics.js';
import type { AttentionMode } from './plan.js';
import { definePlugin } from './plugin.js';
import { type PromptKind, promptCheckFor } from './prompt-check.js';
import replica from './replica.js';
import chat from './routes/chat.js';
import completions from './routes/completions.js';
import health from './routes/health.js';
import metricsRoute from './routes/metrics.js';
import models from './routes/models.js';
import tokenize from './routes/tokenize.js';
import ui from './routes/ui.js';

export type { SiftContext } from './context.js';

export interface AppOptions {
  /** The engine, or null while the model loads. */
  engine: EngineClient | null;
  /** The model's text side, or null while the model is fetched (then passed to state.ready). */
  text: TextSide | null;
  /** Server config; default: the defaults. */
  config?: ServerConfig;
  /** pino logger; default: no logging. */
  logger?: Logger;
  /** Name clients pass as `model`; default config.servedModelName, else the engine's modelName. */
  modelName?: string;
  /** The engine's attention mode for requests that do not choose one; default the attention config's default. */
  attentionMode?: AttentionMode;
}

const REQUEST_ID = /^[\w.:@/+=-]{1,128}$/;

/**
 * The charset a Content-Type header declares (lowercased), or null when it declares none. JSON bodies are UTF-8
 * (RFC 8259): a body declared in another charset would be read as UTF-8 all the same, so it is refused (415)
 * rather than turned into a different prompt.
 */
export function declaredCharset(contentType: string | undefined): string | null {
  if (!contentType) return null;
  const m = /;\s*charset\s*=\s*("?)([^";\s]*)\1/i.exec(contentType);
  return m ? m[2].toLowerCase() : null;
}

/** X-Request-Id from the client when it is a sane token, else a fresh UUID. */
function requestId(req: IncomingMessage): string {
  const h = req.headers['x-request-id'];
  return typeof h === 'string' && REQUEST_ID.test(h) ? h : randomUUID();
}

export async function buildApp(opts: AppOptions): Promise<FastifyInstance> {
  const config = opts.config ?? serverConfig();
  const app = Fastify({
    ...(opts.logger ? { loggerInstance: opts.logger } : { logger: false }),
    genReqId: requestId,
    // fastify's own two lines per request are off: respond.ts logs one summary line per generation request.
    logController: new LogController({ requestIdLogLabel: 'reqId', disableRequestLogging: true }),
    bodyLimit: config.maxBodyBytes,
    // verbose: a validation error carries the value and its schema, so messages can name them (errors.ts)
    ajv: {
      customOptions: {
        coerceTypes: false,
        removeAdditional: false,
        useDefaults: false,
        allErrors: false,
        verbose: true,
      },
    },
  });
  const state = new EngineState(opts.engine, opts.text, opts.modelName || config.servedModelName || null);
  const metrics = new ServerMetrics(() => state.engine?.stats() ?? null);
  const attentionMode = opts.attentionMode ?? (attentionConfig().mode as AttentionMode);

  const context = definePlugin(
    async (instance: FastifyInstance) => {
      instance.decorate('sift', { state, metrics, config, attentionMode });
      instance.addHook('onRequest', async (request, reply) => {
        reply.header('x-request-id', request.id);
        const charset = declaredCharset(request.headers['content-type']);
        if (charset !== null && charset !== 'utf-8' && charset !== 'utf8') {
          throw new SiftError(
            'UNSUPPORTED_MEDIA_TYPE',
            `request bodies must be UTF-8 JSON; the body declares charset "${charset}"`,
          );
        }
      });
      instance.addHook('onResponse', async (request, reply) => {
        request.log.debug(
          { method: request.method, url: request.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) },
          'response sent',
        );
      });
    },
    { name: 'sift-context' },
  );

  await app.register(errors);
  await app.register(body, {
    // a big body on a generation route has its prompts judged where it is parsed (server/prompt-check.ts)
    promptCheck: (request) => {
      const kind = (request.routeOptions.config as { prompts?: PromptKind } | undefined)?.prompts;
      const { engine, text } = state;
      return kind && engine && text && !state.lost ? promptCheckFor(kind, engine, text) : null;
    },
  });
  await app.register(context);
  await app.register(replica, { replicaId: replicaIdOf(config) });
  await app.register(cors, { origins: allowedOriginList(config) });
  await app.register(auth, { apiKeys: apiKeyList(config) });
  await app.register(health);
  await app.register(metricsRoute);
  await app.register(models);
  await app.register(chat);
  await app.register(completions);
  await app.register(tokenize);
  await app.register(ui);
  return app as unknown as FastifyInstance;
}
