/**
 * HTTP server configuration (`sift serve`): where to listen, which model to serve, API keys, limits.
 * Layered like every section: defaults < config file ("server": {...}) < SIFT_SERVER_* env < CLI flags.
 * The context limit is the engine's (`--max-context`, config/engine.ts): serve warns when it exceeds the
 * model's trained length.
 */
import os from 'node:os';
import { SiftError } from './errors.js';
import { resolveSection, type SectionLayers, type SectionSpec, type SectionValues } from './schema.js';

export const SERVER_SPEC = {
  host: {
    kind: 'string',
    default: '127.0.0.1',
    doc: 'address to listen on (0.0.0.0 exposes the server to the network)',
  },
  port: { kind: 'int', default: 8000, min: 0, max: 65535, doc: 'TCP port (0 = any free port)' },
  model: {
    kind: 'string',
    default: 'stories15M',
    doc: 'model to serve: a known model name (fetched on first use) or an HF directory',
  },
  servedModelName: {
    kind: 'string',
    default: '',
    defaultText: 'the model name, or the directory name for a path',
    doc: 'name clients pass as `model`',
  },
  apiKeys: {
    kind: 'string',
    default: '',
    defaultText: 'none, no authentication',
    doc: 'comma-separated API keys accepted as "Authorization: Bearer KEY" (also --api-key KEY, repeatable)',
  },
  allowedOrigins: {
    kind: 'string',
    default: '',
    doc: 'comma-separated origins allowed to call the API from a browser (CORS), "*" for any; empty = CORS off',
  },
  maxBodyBytes: {
    kind: 'int',
    default: 8 * 1024 * 1024,
    min: 1024,
    max: 1 << 30,
    doc: 'largest request body in bytes (larger -> 413)',
  },
  maxWaiting: {
    kind: 'int',
    default: 256,
    min: 0,
    max: 1 << 20,
    doc: 'requests allowed to wait for the engine before new ones get 429 (0 = no limit)',
  },
  requestTimeoutMs: {
    kind: 'int',
    default: 0,
    min: 0,
    max: 24 * 3600 * 1000,
    doc: 'give up generating this many ms after a request arrives and return what exists, finish_reason "timeout" (0 = no limit)',
  },
  keepAliveMs: {
    kind: 'int',
    default: 5000,
    min: 1,
    max: 600_000,
    doc: 'SSE comment (": keep-alive") after this many ms without output, e.g. during a long prefill',
  },
  shutdownGraceMs: {
    kind: 'int',
    default: 10_000,
    min: 0,
    max: 600_000,
    doc: 'on SIGTERM/SIGINT, time in-flight requests get to finish before they are cancelled',
  },
  replicaId: {
    kind: 'string',
    default: '',
    doc: 'name of this replica, sent as X-Sift-Replica on every response so clients and balancers see which replica answered (empty = the hostname)',
  },
  logLevel: {
    kind: 'string',
    default: 'info',
    choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    doc: 'pino log level',
  },
} as const satisfies SectionSpec;

export type ServerConfig = SectionValues<typeof SERVER_SPEC>;

export function serverConfig(layers: SectionLayers = {}): ServerConfig {
  return resolveSection('SERVER', SERVER_SPEC, layers);
}

/** The configured CORS origins as a list (empty = CORS off; ["*"] = any origin). */
export function allowedOriginList(cfg: Pick<ServerConfig, 'allowedOrigins'>): string[] {
  return cfg.allowedOrigins
    .split(',')
    .map((o) => o.trim())
    .filter((o) => o !== '');
}

/** The configured API keys as a list (empty = authentication off). */
export function apiKeyList(cfg: Pick<ServerConfig, 'apiKeys'>): string[] {
  return cfg.apiKeys
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k !== '');
}

/** Characters a replica id may use: visible ASCII, as an HTTP header value carries it unchanged. */
const REPLICA_ID = /^[\x21-\x7e]{1,128}$/;

/** The replica id: --replica-id, else the hostname. Throws CONFIG_INVALID when it cannot be a header value. */
export function replicaIdOf(cfg: Pick<ServerConfig, 'replicaId'>, hostname: () => string = os.hostname): string {
  const id = cfg.replicaId || hostname();
  if (!REPLICA_ID.test(id)) {
    throw new SiftError(
      'CONFIG_INVALID',
      `--replica-id must be 1-128 visible ASCII characters without spaces (got ${JSON.stringify(id)})`,
      { param: 'replicaId' },
    );
  }
  return id;
}
