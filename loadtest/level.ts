/**
 * One load level: `concurrency` closed-loop streams (each sends its next request when the last one ended) for
 * `durationMs` or `maxRequests` requests, whichever comes first; requests in flight at the deadline run to their end
 * (bounded by the request timeout). Then the figures of the level (LevelResult).
 *
 * Definitions (every latency in ms, every distribution as n/mean/min/max/p50/p90/p99 over successful requests):
 *   ttftMs        first content delta received - request sent
 *   itlMs         gap between consecutive content deltas of one stream, pooled over all streams
 *   tpotMs        per request: (e2e - ttft) / (output tokens - 1), requests with >= 2 output tokens
 *   e2eMs         data: [DONE] received - request sent
 *   streamTokensPerS  per request: output tokens / e2e
 *   outputTokensPerS  all output tokens of successful requests / level wall time (aggregate)
 *   requestsPerS      successful requests / level wall time
 * Output tokens are usage.completion_tokens (the server's count), else the number of content deltas.
 * The wall time runs from the level's start to the end of its last request.
 *   prefixCache   over successful requests whose usage reports prompt_tokens_details.cached_tokens: prompt tokens,
 *                 cached tokens, and their ratio (the prefix-cache hit rate the clients saw)
 *   byReplica     responses counted by their X-Sift-Replica header (which replica behind a balancer answered)
 */
import type { RequestOutcome, RequestSpec, SseClient } from './sse-client.js';
import { type Summary, summarize } from './stats.js';
import type { AttentionMode, Scenario } from './workload.js';

export interface LevelProgress {
  elapsedMs: number;
  done: number;
  errors: number;
  inFlight: number;
}

export interface PromptLenFigures {
  /** Target prompt length (tokens). */
  promptLen: number;
  n: number;
  /** Mean prompt tokens the server reported (usage.prompt_tokens); null without usage. */
  promptTokens: number | null;
  ttftMs: Summary;
  e2eMs: Summary;
}

/** The responses one replica gave in a level. */
export interface ReplicaFigures {
  /** X-Sift-Replica of the responses, or null for those without one (including failed connections). */
  replica: string | null;
  ok: number;
  errors: number;
  /** Over the successful requests with usage: prompt tokens, and those the prefix cache supplied (null when no
   *  response reported cached tokens). */
  promptTokens: number;
  cachedTokens: number | null;
}

export interface PrefixCacheFigures {
  /** Successful requests whose usage reported cached tokens. */
  requests: number;
  promptTokens: number;
  cachedTokens: number;
  /** cachedTokens / promptTokens; null when no request reported cached tokens. */
  hitRate: number | null;
}

export interface LevelResult {
  scenario: Scenario;
  attention: AttentionMode | null;
  concurrency: number;
  /** Which client drove the level. */
  driver: 'sse-client' | 'autocannon';
  plannedDurationS: number;
  maxRequests: number | null;
  wallS: number;
  requests: { started: number; ok: number; errors: number; aborted: number; staleSocketRetries: number };
  errorsByKind: Record<string, number>;
  /** The first message seen of each error kind. */
  errorExamples: Record<string, string>;
  requestsPerS: number;
  outputTokensPerS: number;
  outputTokensTotal: number;
  outputTokens: Summary;
  promptTokens: Summary;
  ttftMs: Summary;
  itlMs: Summary;
  tpotMs: Summary;
  e2eMs: Summary;
  streamTokensPerS: Summary;
  finishReasons: Record<string, number>;
  /**
   * Successful requests by the decode attention the server says ran (sift's usage.attention.mode), e.g.
   * { dense: 12 } for sparse requests whose contexts fit the token budget; empty when the server does not say.
   */
  attentionRan: Record<string, number>;
  /** Long-prompt requests grouped by target prompt length. */
  byPromptLen: PromptLenFigures[];
  prefixCache: PrefixCacheFigures;
  /** Sorted by replica id (responses without the header last). */
  byReplica: ReplicaFigures[];
  interrupted: boolean;
}

export interface LevelPlan {
  scenario: Scenario;
  attention: AttentionMode | null;
  concurrency: number;
  durationMs: number;
  maxRequests: number | null;
  makeRequest: (i: number) => RequestSpec;
  /** Told each request's outcome as it ends (before the stream sends its next request). */
  onOutcome?: (spec: RequestSpec, outcome: RequestOutcome) => void;
}

export async function runLevel(
  client: SseClient,
  plan: LevelPlan,
  opts: { signal?: AbortSignal; onProgress?: (p: LevelProgress) => void } = {},
): Promise<LevelResult> {
  const t0 = performance.now();
  const deadline = t0 + plan.durationMs;
  const outcomes: RequestOutcome[] = [];
  let issued = 0;
  let errors = 0;
  let inFlight = 0;
  const more = () =>
    !opts.signal?.aborted && performance.now() < deadline && (plan.maxRequests === null || issued < plan.maxRequests);
  const tick = () => opts.onProgress?.({ elapsedMs: performance.now() - t0, done: outcomes.length, errors, inFlight });
  const ticker = setInterval(tick, 250);
  const stream = async () => {
    while (more()) {
      const spec = plan.makeRequest(issued++);
      inFlight++;
      const o = await client.send(spec, opts.signal);
      inFlight--;
      outcomes.push(o);
      if (o.error) errors++;
      plan.onOutcome?.(spec, o);
    }
  };
  try {
    await Promise.all(Array.from({ length: plan.concurrency }, () => stream()));
  } finally {
    clearInterval(ticker);
    tick();
  }
  const end = outcomes.reduce((m, o) => Math.max(m, o.end), t0);
  return levelFigures(plan, outcomes, (end - t0) / 1000, opts.signal?.aborted ?? false);
}

const count = (m: Record<string, number>, k: string) => {
  m[k] = (m[k] ?? 0) + 1;
};

/** The figures of a level from its request outcomes. */
export function levelFigures(
  plan: Omit<LevelPlan, 'makeRequest'>,
  outcomes: RequestOutcome[],
  wallS: number,
  interrupted: boolean,
): LevelResult {
  const ok = outcomes.filter((o) => !o.error && !o.aborted);
  const errorsByKind: Record<string, number> = {};
  const errorExamples: Record<string, string> = {};
  for (const o of outcomes) {
    if (!o.error || o.aborted) continue;
    count(errorsByKind, o.error);
    if (!(o.error in errorExamples)) errorExamples[o.error] = o.errorDetail ?? '';
  }
  const finishReasons: Record<string, number> = {};
  for (const o of ok) count(finishReasons, o.finishReason ?? 'none');
  const attentionRan: Record<string, number> = {};
  for (const o of ok) if (o.usage?.attentionRan) count(attentionRan, o.usage.attentionRan);
  const tokensTotal = ok.reduce((s, o) => s + o.outputTokens, 0);
  const lens = [...new Set(ok.filter((o) => o.promptLen !== null).map((o) => o.promptLen as number))].sort(
    (a, b) => a - b,
  );
  const byPromptLen = lens.map((len) => {
    const g = ok.filter((o) => o.promptLen === len);
    const pt = g.filter((o) => o.usage).map((o) => o.usage!.promptTokens);
    return {
      promptLen: len,
      n: g.length,
      promptTokens: pt.length ? pt.reduce((a, b) => a + b, 0) / pt.length : null,
      ttftMs: summarize(g.filter((o) => o.ttftMs !== null).map((o) => o.ttftMs as number)),
      e2eMs: summarize(g.map((o) => o.e2eMs)),
    };
  });
  const withCached = ok.filter((o) => o.usage && o.usage.cachedTokens !== null);
  const promptTotal = withCached.reduce((a, o) => a + o.usage!.promptTokens, 0);
  const cachedTotal = withCached.reduce((a, o) => a + (o.usage!.cachedTokens as number), 0);
  const perS = (x: number) => (wallS > 0 ? x / wallS : 0);
  return {
    scenario: plan.scenario,
    attention: plan.attention,
    concurrency: plan.concurrency,
    driver: 'sse-client',
    plannedDurationS: plan.durationMs / 1000,
    maxRequests: plan.maxRequests,
    wallS,
    requests: {
      started: outcomes.length,
      ok: ok.length,
      errors: outcomes.filter((o) => o.error && !o.aborted).length,
      aborted: outcomes.filter((o) => o.aborted).length,
      staleSocketRetries: outcomes.filter((o) => o.staleSocketRetry).length,
    },
    errorsByKind,
    errorExamples,
    requestsPerS: perS(ok.length),
    outputTokensPerS: perS(tokensTotal),
    outputTokensTotal: tokensTotal,
    outputTokens: summarize(ok.map((o) => o.outputTokens)),
    promptTokens: summarize(ok.filter((o) => o.usage).map((o) => o.usage!.promptTokens)),
    ttftMs: summarize(ok.filter((o) => o.ttftMs !== null).map((o) => o.ttftMs as number)),
    itlMs: summarize(ok.flatMap((o) => o.itlMs)),
    tpotMs: summarize(
      ok
        .filter((o) => o.ttftMs !== null && o.outputTokens >= 2)
        .map((o) => (o.e2eMs - (o.ttftMs as number)) / (o.outputTokens - 1)),
    ),
    e2eMs: summarize(ok.map((o) => o.e2eMs)),
    streamTokensPerS: summarize(ok.filter((o) => o.e2eMs > 0).map((o) => o.outputTokens / (o.e2eMs / 1000))),
    finishReasons,
    attentionRan,
    byPromptLen,
    prefixCache: {
      requests: withCached.length,
      promptTokens: promptTotal,
      cachedTokens: cachedTotal,
      hitRate: promptTotal > 0 ? cachedTotal / promptTotal : null,
    },
    byReplica: replicaFigures(outcomes),
    interrupted,
  };
}

/** Responses by X-Sift-Replica (aborted requests left out). */
export function replicaFigures(outcomes: RequestOutcome[]): ReplicaFigures[] {
  const by = new Map<string | null, ReplicaFigures>();
  for (const o of outcomes) {
    if (o.aborted) continue;
    let f = by.get(o.replica);
    if (!f) {
      f = { replica: o.replica, ok: 0, errors: 0, promptTokens: 0, cachedTokens: null };
      by.set(o.replica, f);
    }
    if (o.error) {
      f.errors++;
      continue;
    }
    f.ok++;
    f.promptTokens += o.usage?.promptTokens ?? 0;
    const c = o.usage?.cachedTokens ?? null;
    if (c !== null) f.cachedTokens = (f.cachedTokens ?? 0) + c;
  }
  return [...by.values()].sort((a, b) =>
    a.replica === null ? 1 : b.replica === null ? -1 : a.replica.localeCompare(b.replica, 'en', { numeric: true }),
  );
}
