/**
 * A tiny OpenAI-compatible streaming server for the loadtest tests, with deterministic timing: the role chunk at
 * once, the first content token `prefillMs` (+ `prefillMsPerToken` per prompt token) after the request, then one token
 * every `tokenMs`, then a finish chunk, the usage chunk and `data: [DONE]`. Prompt tokens = 5 + words of the prompt.
 * `behave(i)` picks what request i (0-based, in arrival order) gets: a good stream or one of the failures.
 * With `replica` it names itself in X-Sift-Replica as a sift replica does; with `prefixCache` it reports
 * usage.prompt_tokens_details.cached_tokens = the longest word prefix the prompt shares with an earlier one.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Behaviour = 'ok' | 'no-done' | 'bad-json' | 'no-role' | 'http500' | 'http429' | 'drop-reused';

export interface FakeOptions {
  prefillMs?: number;
  prefillMsPerToken?: number;
  tokenMs?: number;
  /** Reported as max_model_len in /v1/models and enforced (400 context_length_exceeded); null = neither. */
  context?: number | null;
  /** false: enforce `context` but do not report it in /v1/models (default true). */
  reportContext?: boolean;
  behave?: (i: number) => Behaviour;
  replica?: string;
  prefixCache?: boolean;
  /** As sift: usage.attention.mode, the attention that ran, for a request body; undefined = no attention usage. */
  attentionRan?: (body: Record<string, unknown>) => string;
  /** As sift: the `sift` object of the model in /v1/models (how it serves). */
  siftSettings?: Record<string, unknown>;
}

export interface FakeServer {
  url: string;
  /** Bodies of the completion requests received, in order. */
  bodies: Record<string, unknown>[];
  /** Their headers. */
  headers: http.IncomingHttpHeaders[];
  close(): Promise<void>;
}

const promptWordsOf = (body: Record<string, unknown>): string[] => {
  const msgs = body.messages as { content: string }[] | undefined;
  const text = msgs ? msgs.map((m) => m.content).join(' ') : String(body.prompt ?? '');
  return text.split(/\s+/).filter(Boolean);
};
const promptTokensOf = (body: Record<string, unknown>): number => 5 + promptWordsOf(body).length;

export async function startFake(o: FakeOptions = {}): Promise<FakeServer> {
  const prefillMs = o.prefillMs ?? 30;
  const perToken = o.prefillMsPerToken ?? 0;
  const tokenMs = o.tokenMs ?? 10;
  const context = o.context === undefined ? 256 : o.context;
  const behave = o.behave ?? (() => 'ok');
  const bodies: Record<string, unknown>[] = [];
  const headers: http.IncomingHttpHeaders[] = [];
  const seen: string[][] = [];
  const named = o.replica ? { 'x-sift-replica': o.replica } : {};
  const served = new WeakSet<object>();
  let n = 0;

  const server = http.createServer((req, res) => {
    const reused = served.has(req.socket);
    served.add(req.socket);
    if (req.method === 'GET' && req.url === '/health') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    if (req.method === 'GET' && req.url === '/v1/models') {
      const model: Record<string, unknown> = { id: 'fake-model', object: 'model', created: 0, owned_by: 'fake' };
      if (context !== null && o.reportContext !== false) model.max_model_len = context;
      if (o.siftSettings) model.sift = o.siftSettings;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data: [model] }));
      return;
    }
    if (req.method !== 'POST' || (req.url !== '/v1/chat/completions' && req.url !== '/v1/completions')) {
      res.writeHead(404).end();
      return;
    }
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (s: string) => {
      raw += s;
    });
    req.on('end', () => {
      const t0 = performance.now();
      const body = JSON.parse(raw) as Record<string, unknown>;
      const what = behave(n++);
      bodies.push(body);
      headers.push(req.headers);
      let cached = 0;
      if (o.prefixCache) {
        const words = promptWordsOf(body);
        for (const w of seen) {
          let c = 0;
          while (c < w.length && c < words.length && w[c] === words[c]) c++;
          cached = Math.max(cached, c);
        }
        seen.push(words);
      }
      const chat = req.url === '/v1/chat/completions';
      const maxTokens = Number(body.max_tokens ?? 16);
      const promptTokens = promptTokensOf(body);
      const error = (status: number, message: string, code: string | null) =>
        res.writeHead(status, { 'content-type': 'application/json', ...named }).end(
          JSON.stringify({
            error: { message, type: status === 429 ? 'rate_limit_error' : 'server_error', param: null, code },
          }),
        );
      if (what === 'drop-reused' && reused) {
        req.socket.destroy();
        return;
      }
      if (what === 'http500') return error(500, 'internal error', null);
      if (what === 'http429') return error(429, 'queue full', 'rate_limit_exceeded');
      if (context !== null && promptTokens + maxTokens > context) {
        return error(
          400,
          `prompt (${promptTokens}) + max_tokens (${maxTokens}) exceeds the context length ${context}`,
          'context_length_exceeded',
        );
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...named });
      const id = `cmpl-${n}`;
      const chunk = (choice: Record<string, unknown> | null, usage?: Record<string, unknown>) => {
        const c: Record<string, unknown> = {
          id,
          object: chat ? 'chat.completion.chunk' : 'text_completion',
          created: 0,
          model: 'fake-model',
        };
        c.choices = choice ? [{ index: 0, ...choice }] : [];
        if (usage) c.usage = usage;
        return `data: ${JSON.stringify(c)}\n\n`;
      };
      const delta = (content: string | null, finish: string | null, role = false) =>
        chat
          ? {
              delta: { ...(role ? { role: 'assistant' } : {}), ...(content !== null ? { content } : {}) },
              finish_reason: finish,
            }
          : { text: content ?? '', finish_reason: finish };
      if (chat && what !== 'no-role') res.write(chunk(delta('', null, true)));
      const first = t0 + prefillMs + perToken * promptTokens;
      let k = 0;
      const next = () => {
        if (res.destroyed) return;
        if (k < maxTokens) {
          if (what === 'bad-json' && k === 2) res.write('data: {"choices": [oops\n\n');
          else res.write(chunk(delta(`t${k} `, null)));
          k++;
          setTimeout(next, Math.max(0, first + k * tokenMs - performance.now()));
          return;
        }
        res.write(chunk(delta(null, 'length')));
        const usage: Record<string, unknown> = {
          prompt_tokens: promptTokens,
          completion_tokens: maxTokens,
          total_tokens: promptTokens + maxTokens,
          ...(o.prefixCache ? { prompt_tokens_details: { cached_tokens: Math.min(cached, promptTokens - 1) } } : {}),
        };
        if (o.attentionRan) usage.attention = { mode: o.attentionRan(body) };
        res.write(chunk(null, usage as Record<string, number>));
        if (what !== 'no-done') res.write('data: [DONE]\n\n');
        res.end();
      };
      setTimeout(next, Math.max(0, first - performance.now()));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    bodies,
    headers,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
