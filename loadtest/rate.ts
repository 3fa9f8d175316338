/**
 * The `rate` scenario: autocannon drives `concurrency` fixed keep-alive connections, each sending the short
 * streaming request again as soon as the last response is complete. autocannon hands a response to its hooks only
 * once the whole body is in, so this level measures requests/s, end-to-end latency and output tokens/s (from the
 * usage chunk), and still checks every body as a complete well-formed stream; it has no TTFT or inter-token
 * figures (the sse-client levels have them).
 */
import autocannon from 'autocannon';
import { type LevelPlan, type LevelProgress, type LevelResult, levelFigures } from './level.js';
import { SseCompletionReader } from './sse.js';
import { httpError, REPLICA_HEADER, type RequestOutcome, replicaOf } from './sse-client.js';

export async function runRateLevel(
  baseUrl: string,
  plan: LevelPlan,
  opts: { apiKey?: string; timeoutMs: number; signal?: AbortSignal; onProgress?: (p: LevelProgress) => void },
): Promise<LevelResult> {
  const spec = plan.makeRequest(0);
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'text/event-stream',
    ...spec.headers,
  };
  if (opts.apiKey) headers.authorization = `Bearer ${opts.apiKey}`;
  const base = baseUrl.replace(/\/+$/, '');
  const outcomes: RequestOutcome[] = [];
  const blank = (start: number): RequestOutcome => ({
    kind: spec.kind,
    promptLen: spec.promptLen,
    start,
    end: start,
    error: null,
    errorDetail: null,
    aborted: false,
    status: null,
    ttftMs: null,
    itlMs: [],
    e2eMs: 0,
    outputTokens: 0,
    contentDeltas: 0,
    usage: null,
    finishReason: null,
    staleSocketRetry: false,
    replica: null,
  });
  let pending: RequestOutcome | null = null;
  const onResponse = (status: number, body: string, _context: unknown, resHeaders: Record<string, string>) => {
    const o = blank(performance.now());
    o.status = status;
    // autocannon keeps the header names' case as sent.
    const name = Object.keys(resHeaders ?? {}).find((k) => k.toLowerCase() === REPLICA_HEADER);
    o.replica = name === undefined ? null : replicaOf(resHeaders[name]);
    if (status !== 200) {
      Object.assign(o, httpError(status, body));
    } else {
      const r = new SseCompletionReader(spec.api, spec.expectUsage);
      r.feed(body, o.start);
      const v = r.finish(o.start);
      o.usage = v.usage;
      o.finishReason = v.finishReason;
      o.contentDeltas = v.contentTimes.length;
      o.outputTokens = v.usage?.completionTokens ?? v.contentTimes.length;
      if (v.streamError !== null) Object.assign(o, { error: 'stream_error', errorDetail: v.streamError });
      else if (v.malformed !== null) Object.assign(o, { error: 'malformed', errorDetail: v.malformed });
    }
    pending = o;
  };
  const connections = plan.maxRequests === null ? plan.concurrency : Math.min(plan.concurrency, plan.maxRequests);
  const t0 = performance.now();
  let errors = 0;
  return new Promise<LevelResult>((resolve, reject) => {
    const instance = autocannon(
      {
        url: base,
        connections,
        duration: Math.max(1, Math.round(plan.durationMs / 1000)),
        ...(plan.maxRequests === null ? {} : { amount: plan.maxRequests }),
        timeout: Math.max(1, Math.ceil(opts.timeoutMs / 1000)),
        requests: [{ method: 'POST', path: spec.path, headers, body: JSON.stringify(spec.body), onResponse }],
      },
      (err, result) => {
        clearInterval(ticker);
        opts.signal?.removeEventListener('abort', stop);
        if (err) {
          reject(err);
          return;
        }
        opts.onProgress?.({ elapsedMs: performance.now() - t0, done: outcomes.length, errors, inFlight: 0 });
        const r = levelFigures(plan, outcomes, result.duration, opts.signal?.aborted ?? false);
        resolve({ ...r, driver: 'autocannon' });
      },
    );
    // 'response' follows onResponse synchronously on the same connection: attach autocannon's timing to it.
    instance.on('response', (_client: unknown, _status: number, _bytes: number, responseTime: number) => {
      const o = pending ?? blank(performance.now());
      pending = null;
      o.e2eMs = responseTime;
      o.start = o.end - responseTime;
      if (o.error) errors++;
      outcomes.push(o);
    });
    instance.on('reqError', (err: Error) => {
      const o = blank(performance.now());
      const timeout = /timed out/.test(err.message);
      o.error = timeout ? 'timeout' : 'connection';
      o.errorDetail = timeout
        ? `no complete response within ${opts.timeoutMs} ms`
        : `${(err as NodeJS.ErrnoException).code ?? err.name}: ${err.message}`;
      errors++;
      outcomes.push(o);
    });
    const ticker = setInterval(
      () =>
        opts.onProgress?.({ elapsedMs: performance.now() - t0, done: outcomes.length, errors, inFlight: connections }),
      250,
    );
    const stop = () => instance.stop();
    if (opts.signal?.aborted) stop();
    else opts.signal?.addEventListener('abort', stop, { once: true });
  });
}
