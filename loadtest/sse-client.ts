/**
 * The streaming HTTP client that times every token: one POST per request over a keep-alive agent, the body read as
 * it arrives and checked by SseCompletionReader. autocannon only hands a response over once it is complete, so the
 * per-token figures (TTFT, inter-token latency) come from this client; autocannon drives the `rate` scenario.
 *
 * Sockets: the agent keeps up to max(2 * concurrency, concurrency + 4) sockets, so the pool is never the bottleneck,
 * and honours the server's `Keep-Alive: timeout=N` hint (Node drops idle sockets a second before it). A request
 * that fails before any response byte on a *reused* socket (the server closed it while idle: "socket hang up",
 * ECONNRESET, EPIPE) is the client's race, not a server error: it is retried once on a fresh connection and counted
 * as a stale-socket retry, as Node's documentation advises (`request.reusedSocket`).
 */
import http from 'node:http';
import https from 'node:https';
import { type Api, SseCompletionReader, type StreamUsage } from './sse.js';

/** One request to send: path under the base URL and its JSON body. */
export interface RequestSpec {
  path: string;
  body: Record<string, unknown>;
  api: Api;
  /** Whether the body asks for stream_options.include_usage (the usage chunk is then required). */
  expectUsage: boolean;
  /** Which part of the workload it belongs to ('short', 'long'), and the prompt length aimed at (tokens). */
  kind: string;
  promptLen: number | null;
  /** Extra request headers, e.g. X-Session-Id (the routing key a balancer hashes). */
  headers?: Record<string, string>;
  /** Sessions scenarios: which conversation and turn (0-based) the request is. */
  conversation?: { id: number; turn: number };
}

/** Response header naming the replica that answered (sift's --replica-id; see server/replica.ts). */
export const REPLICA_HEADER = 'x-sift-replica';

/** What one request gave. Times are ms on performance.now()'s clock. */
export interface RequestOutcome {
  kind: string;
  promptLen: number | null;
  start: number;
  end: number;
  /** null = a well-formed complete completion; else the error kind: http_<status>, context_length_exceeded,
   *  connection, timeout, malformed, stream_error. */
  error: string | null;
  errorDetail: string | null;
  /** The request was cut short by Ctrl-C (not counted as an error). */
  aborted: boolean;
  status: number | null;
  /** First content delta - start. */
  ttftMs: number | null;
  /** Gaps between consecutive content deltas. */
  itlMs: number[];
  /** [DONE] (or end of response) - start. */
  e2eMs: number;
  /** usage.completion_tokens when the server sent usage, else the number of content deltas. */
  outputTokens: number;
  contentDeltas: number;
  usage: StreamUsage | null;
  finishReason: string | null;
  staleSocketRetry: boolean;
  /** X-Sift-Replica of the response: which replica behind a balancer answered; null when there was none. */
  replica: string | null;
}

export interface ClientOptions {
  baseUrl: string;
  concurrency: number;
  apiKey?: string;
  /** Whole-request limit, send to end of stream. */
  timeoutMs: number;
}

const STALE_CODES = new Set(['ECONNRESET', 'EPIPE']);

export class SseClient {
  private readonly agent: http.Agent;
  private readonly base: URL;
  private readonly mod: typeof http | typeof https;

  constructor(private readonly opts: ClientOptions) {
    this.base = new URL(opts.baseUrl);
    this.mod = this.base.protocol === 'https:' ? https : http;
    const maxSockets = Math.max(2 * opts.concurrency, opts.concurrency + 4);
    const agentOpts = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets, scheduling: 'lifo' as const };
    this.agent = this.mod === https ? new https.Agent(agentOpts) : new http.Agent(agentOpts);
  }

  /** Closes every socket of the pool. */
  close(): void {
    this.agent.destroy();
  }

  async send(spec: RequestSpec, signal?: AbortSignal): Promise<RequestOutcome> {
    const start = performance.now();
    const first = await this.once(spec, start, signal);
    if (!first.retryable) return strip(first);
    return { ...strip(await this.once(spec, start, signal)), staleSocketRetry: true };
  }

  private once(
    spec: RequestSpec,
    start: number,
    signal?: AbortSignal,
  ): Promise<RequestOutcome & { retryable: boolean }> {
    const payload = Buffer.from(JSON.stringify(spec.body));
    const headers: Record<string, string | number> = {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      'content-length': payload.length,
    };
    if (this.opts.apiKey) headers.authorization = `Bearer ${this.opts.apiKey}`;
    Object.assign(headers, spec.headers);
    const basePath = this.base.pathname.replace(/\/+$/, '');
    const base: Omit<RequestOutcome, 'end' | 'e2eMs'> = {
      kind: spec.kind,
      promptLen: spec.promptLen,
      start,
      error: null,
      errorDetail: null,
      aborted: false,
      status: null,
      ttftMs: null,
      itlMs: [],
      outputTokens: 0,
      contentDeltas: 0,
      usage: null,
      finishReason: null,
      staleSocketRetry: false,
      replica: null,
    };

    return new Promise((resolve) => {
      let settled = false;
      let gotResponse = false;
      const finish = (o: Partial<RequestOutcome> & { retryable?: boolean }, end = performance.now()) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve({ ...base, ...o, end, e2eMs: end - start, retryable: o.retryable ?? false });
      };
      const req = this.mod.request({
        protocol: this.base.protocol,
        hostname: this.base.hostname,
        port: this.base.port,
        path: basePath + spec.path,
        method: 'POST',
        headers,
        agent: this.agent,
      });
      const timer = setTimeout(() => {
        finish({ error: 'timeout', errorDetail: `no complete response within ${this.opts.timeoutMs} ms` });
        req.destroy();
      }, this.opts.timeoutMs);
      const onAbort = () => {
        finish({ aborted: true });
        req.destroy();
      };
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });

      req.on('error', (err: NodeJS.ErrnoException) => {
        const code = err.code ?? '';
        if (!gotResponse && req.reusedSocket && STALE_CODES.has(code)) {
          finish({ retryable: true, staleSocketRetry: true });
          return;
        }
        finish({ error: 'connection', errorDetail: `${code || err.name}: ${err.message}` });
      });
      req.on('response', (res) => {
        gotResponse = true;
        const status = res.statusCode ?? 0;
        base.replica = replicaOf(res.headers[REPLICA_HEADER]);
        res.setEncoding('utf8');
        if (status !== 200) {
          let text = '';
          res.on('data', (s: string) => {
            if (text.length < 65536) text += s;
          });
          res.on('end', () => finish({ status, ...httpError(status, text) }));
          res.on('error', () => finish({ status, ...httpError(status, text) }));
          return;
        }
        const ctype = String(res.headers['content-type'] ?? '');
        const reader = new SseCompletionReader(spec.api, spec.expectUsage);
        res.on('data', (s: string) => reader.feed(s, performance.now()));
        res.on('error', (err: NodeJS.ErrnoException) =>
          finish({
            status,
            error: 'connection',
            errorDetail: `connection lost mid-stream: ${err.code ?? ''} ${err.message}`,
          }),
        );
        res.on('end', () => {
          const now = performance.now();
          const v = reader.finish(now);
          const times = v.contentTimes;
          const itl: number[] = [];
          for (let i = 1; i < times.length; i++) itl.push(times[i] - times[i - 1]);
          const o: Partial<RequestOutcome> = {
            status,
            ttftMs: times.length > 0 ? times[0] - start : null,
            itlMs: itl,
            contentDeltas: times.length,
            outputTokens: v.usage?.completionTokens ?? times.length,
            usage: v.usage,
            finishReason: v.finishReason,
          };
          if (!ctype.includes('text/event-stream')) {
            o.error = 'malformed';
            o.errorDetail = `content-type is "${ctype}", not text/event-stream`;
          } else if (v.streamError !== null) {
            o.error = 'stream_error';
            o.errorDetail = v.streamError;
          } else if (v.malformed !== null) {
            o.error = 'malformed';
            o.errorDetail = v.malformed;
          }
          finish(o, v.doneTime ?? now);
        });
      });
      req.end(payload);
    });
  }
}

/** The replica header's value, or null when absent or empty. */
export function replicaOf(h: string | string[] | undefined): string | null {
  const v = Array.isArray(h) ? h[0] : h;
  return typeof v === 'string' && v !== '' ? v : null;
}

const strip = ({ retryable: _, ...o }: RequestOutcome & { retryable: boolean }): RequestOutcome => o;

/** Error kind and message of a non-200 answer, from an OpenAI-shaped error body when there is one. */
export function httpError(status: number, text: string): { error: string; errorDetail: string } {
  let message = text.slice(0, 300);
  let code: unknown;
  try {
    const j = JSON.parse(text) as { error?: { message?: unknown; code?: unknown } | string; message?: unknown };
    if (typeof j.error === 'object' && j.error !== null) {
      if (typeof j.error.message === 'string') message = j.error.message;
      code = j.error.code;
    } else if (typeof j.error === 'string') message = j.error;
    else if (typeof j.message === 'string') message = j.message;
  } catch {
    // not JSON: keep the text
  }
  const ctx =
    code === 'context_length_exceeded' ||
    (status === 400 && /context length|context window|maximum context|too long/i.test(message));
  return { error: ctx ? 'context_length_exceeded' : `http_${status}`, errorDetail: `HTTP ${status}: ${message}` };
}
