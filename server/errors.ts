/**
 * Every failure the HTTP API reports, mapped ONCE to OpenAI's error body `{"error": {message, type, param, code}}`:
 * sift's SiftError catalogue (config/errors.ts), fastify's own errors (schema validation, body too large, bad
 * JSON, unknown route) and anything unexpected. 5xx bodies carry a fixed public message, never internals (the
 * full error goes to the log with the request id). 429 adds Retry-After.
 */
import type { FastifyError, FastifyInstance } from 'fastify';
import { type ErrorCode, SiftError } from '../config/errors.js';
import { definePlugin } from './plugin.js';
import type { ErrorBody } from './protocol.js';

/** Seconds a client should wait before retrying a 429. */
export const RETRY_AFTER_S = 1;

/** What 5xx clients are told, per code (everything else: "internal server error"). */
const PUBLIC_5XX: Partial<Record<ErrorCode, string>> = {
  NOT_READY: 'the model is still loading; retry shortly',
  SHUTTING_DOWN: 'the server is shutting down; the request was not completed',
  DEVICE_LOST: 'the engine is unavailable (GPU device lost)',
  DEVICE_FAULT: 'the engine is unavailable (GPU fault); the server is restarting',
};

/** 5xx that are expected states, not faults: logged without a stack, below error level. */
const EXPECTED_5XX: ReadonlySet<ErrorCode> = new Set(['NOT_READY', 'SHUTTING_DOWN']);

/** OpenAI's `code` for a SiftError code: lowercase, with OpenAI's names where they exist. */
function wireCode(code: ErrorCode): string {
  if (code === 'UNAUTHORIZED') return 'invalid_api_key';
  if (code === 'QUEUE_FULL') return 'rate_limit_exceeded';
  return code.toLowerCase();
}

export interface MappedError {
  status: number;
  body: ErrorBody;
  /**
   * True when the error is the server's fault (logged at error level with its stack). Expected 5xx states (the
   * model loading, shutdown) are not: their bodies are fixed public messages all the same.
   */
  internal: boolean;
}

/** "/messages/0/role" -> "messages[0].role". */
export function jsonPathToParam(instancePath: string, extra?: string): string {
  const parts = instancePath.split('/').filter((p) => p !== '');
  if (extra) parts.push(extra);
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
  /** With ajv's `verbose` (app.ts): the value at fault and the schema holding the failed keyword. */
  data?: unknown;
  parentSchema?: { properties?: Record<string, unknown> };
}

function fromValidation(errs: AjvError[]): SiftError {
  // anyOf (nullable fields, prompt forms) reports each branch; the first error is the informative one.
  const e = errs[0];
  if (e.keyword === 'required') {
    const param = jsonPathToParam(e.instancePath, String(e.params.missingProperty));
    return new SiftError('INVALID_ARGUMENT', `${param} is required`, { param });
  }
  if (e.keyword === 'additionalProperties') {
    // ajv says "must NOT have additional properties": name the field that is not known, and those that are
    const key = String(e.params.additionalProperty);
    const param = jsonPathToParam(e.instancePath, key);
    const known = Object.keys(e.parentSchema?.properties ?? {});
    return new SiftError(
      'INVALID_ARGUMENT',
      `${param} is not a known field${known.length ? ` (known: ${known.join(', ')})` : ''}`,
      { param },
    );
  }
  const param = jsonPathToParam(e.instancePath) || 'body';
  if (e.keyword === 'enum' && Array.isArray(e.params.allowedValues)) {
    const got = e.data === undefined ? '' : ` (got ${JSON.stringify(e.data)})`;
    return new SiftError('INVALID_ARGUMENT', `${param} must be one of ${e.params.allowedValues.join(', ')}${got}`, {
      param,
    });
  }
  return new SiftError('INVALID_ARGUMENT', `${param} ${e.message ?? 'is invalid'}`, { param });
}

/** Maps any thrown value to the status and body the client sees. */
export function mapError(err: unknown): MappedError {
  let e: SiftError | null = null;
  if (err instanceof SiftError) e = err;
  else if (err && typeof err === 'object') {
    const fe = err as FastifyError & { validation?: AjvError[] };
    if (Array.isArray(fe.validation) && fe.validation.length) e = fromValidation(fe.validation);
    else if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
      e = new SiftError('BODY_TOO_LARGE', 'the request body is too large');
    else if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
      // fastify's client errors (bad JSON, media type, ...): their messages describe the request, not us.
      return {
        status: fe.statusCode,
        internal: false,
        body: {
          error: {
            message: fe.message,
            type: 'invalid_request_error',
            param: null,
            code: (fe.code ?? 'bad_request').toLowerCase(),
          },
        },
      };
    }
  }
  if (e === null) {
    return {
      status: 500,
      internal: true,
      body: { error: { message: 'internal server error', type: 'server_error', param: null, code: 'internal' } },
    };
  }
  const hidden = e.status >= 500;
  return {
    status: e.status,
    internal: hidden && !EXPECTED_5XX.has(e.code),
    body: {
      error: {
        message: hidden ? (PUBLIC_5XX[e.code] ?? 'internal server error') : e.message,
        type: e.type,
        param: hidden ? null : e.param,
        code: wireCode(e.code),
      },
    },
  };
}

async function errorsPlugin(app: FastifyInstance): Promise<void> {
  app.setErrorHandler((err, request, reply) => {
    const m = mapError(err);
    if (m.internal) request.log.error({ err }, 'request failed');
    else
      request.log.info({ status: m.status, code: m.body.error.code, param: m.body.error.param }, m.body.error.message);
    if (m.status === 429) reply.header('retry-after', String(RETRY_AFTER_S));
    return reply.code(m.status).type('application/json').send(m.body);
  });
  app.setNotFoundHandler((request, reply) => {
    const m = mapError(new SiftError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`));
    return reply.code(m.status).send(m.body);
  });
}

export default definePlugin(errorsPlugin, { name: 'sift-errors' });
