/**
 * One catalogue of sift's failures. Every error thrown on purpose is a SiftError with a stable `code`;
 * the server maps `status` and `type` to OpenAI-shaped JSON once. 5xx messages are hidden from HTTP clients.
 */
export interface ErrorSpec {
  /** HTTP status the server answers with. */
  status: number;
  /** OpenAI error `type`. */
  type: string;
}

export const ERRORS = {
  NO_ADAPTER: { status: 503, type: 'server_error' },
  ADAPTER_NOT_FOUND: { status: 503, type: 'server_error' },
  DEVICE_LOST: { status: 503, type: 'server_error' },
  /** WebGPU reported a validation or out-of-memory error during a step: its results cannot be trusted. */
  DEVICE_FAULT: { status: 503, type: 'server_error' },
  GPU_LIMIT: { status: 500, type: 'server_error' },
  CHECKPOINT_INVALID: { status: 500, type: 'server_error' },
  CHECKPOINT_UNSUPPORTED: { status: 500, type: 'server_error' },
  MODEL_NOT_FOUND: { status: 404, type: 'invalid_request_error' },
  DOWNLOAD_FAILED: { status: 503, type: 'server_error' },
  CHECKSUM_MISMATCH: { status: 500, type: 'server_error' },
  INVALID_ARGUMENT: { status: 400, type: 'invalid_request_error' },
  CONTEXT_LENGTH_EXCEEDED: { status: 400, type: 'invalid_request_error' },
  CONFIG_INVALID: { status: 500, type: 'server_error' },
  QUEUE_FULL: { status: 429, type: 'rate_limit_error' },
  NOT_READY: { status: 503, type: 'server_error' },
  LISTEN_FAILED: { status: 500, type: 'server_error' },
  /** The server is shutting down: new requests are refused, and requests still running when the grace period
   * ends are cut with this error. */
  SHUTTING_DOWN: { status: 503, type: 'server_error' },
  UNAUTHORIZED: { status: 401, type: 'invalid_request_error' },
  NOT_FOUND: { status: 404, type: 'invalid_request_error' },
  BODY_TOO_LARGE: { status: 413, type: 'invalid_request_error' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, type: 'invalid_request_error' },
  INTERNAL: { status: 500, type: 'server_error' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export class SiftError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly type: string;
  /** The request field at fault, for 400s (OpenAI's `param`). */
  readonly param: string | null;

  constructor(code: ErrorCode, message: string, opts: { param?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'SiftError';
    this.code = code;
    this.status = ERRORS[code].status;
    this.type = ERRORS[code].type;
    this.param = opts.param ?? null;
  }
}

export function isSiftError(e: unknown, code?: ErrorCode): e is SiftError {
  return e instanceof SiftError && (code === undefined || e.code === code);
}
