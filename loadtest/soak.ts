/**
 * The soak run behind `sift loadtest --soak SECONDS`: mixed streaming traffic (chat and completions, short and long
 * prompts, varied max_tokens) at a fixed concurrency for a set time, with a share of requests cut by the client at a
 * random moment (while queued, during prefill or mid-stream). It reports what a long-running server must keep at
 * zero or flat:
 *   errors       on requests the client did not cut: anything but a complete, well-formed stream
 *   leaked pages sift:kv_cache_pages_used once the server is idle after the run (every page back in the pool)
 *   RSS          process_resident_memory_bytes after the warm-up and at the end (medians of three samples each, as
 *                RSS moves with every GC) and its peak, from GET /metrics
 * The server's own figures come from its /metrics; a server without them gets nulls there.
 */

import type { RequestOutcome, RequestSpec, SseClient } from './sse-client.js';
import { type Summary, summarize } from './stats.js';
import { fetchText } from './target.js';
import { type Calibration, longRequest, shortRequest, type WorkloadOptions } from './workload.js';

export interface SoakPlan {
  durationMs: number;
  /** Traffic before the measured part; RSS "after warm-up" is read at its end. */
  warmupMs: number;
  concurrency: number;
  /** Share of requests the client cuts, in [0, 1]. */
  disconnectShare: number;
  /** Prompt lengths (tokens) of the long requests. */
  promptLens: number[];
  /** max_tokens is drawn from [minTokens, maxTokens]. */
  minTokens: number;
  maxTokens: number;
  seed: number;
  /** Metrics sampling period. */
  sampleMs: number;
  /** How long to wait for the server to go idle after the run before reading leaked pages. */
  idleTimeoutMs: number;
}

/** One /metrics reading. */
export interface ServerSample {
  /** ms since the soak started (warm-up included). */
  t: number;
  rssBytes: number | null;
  kvPagesUsed: number | null;
  running: number | null;
  waiting: number | null;
}

export interface SoakResult {
  warmupS: number;
  durationS: number;
  concurrency: number;
  disconnectShare: number;
  requests: {
    started: number;
    /** Complete, well-formed streams. */
    ok: number;
    /** Cut by the client before they ended (not errors). */
    cutByClient: number;
    /** Failed without the client cutting them. */
    errors: number;
    staleSocketRetries: number;
  };
  errorsByKind: Record<string, number>;
  errorExamples: Record<string, string>;
  finishReasons: Record<string, number>;
  e2eMs: Summary;
  outputTokensTotal: number;
  /** Pages still held once the server reported no running or waiting request; null without the metric. */
  leakedPages: number | null;
  /** Whether the server went idle within idleTimeoutMs after the run. */
  wentIdle: boolean;
  rss: { afterWarmupBytes: number | null; endBytes: number | null; peakBytes: number | null; changePct: number | null };
  samples: ServerSample[];
  /** The issue's targets: 0 errors, 0 leaked pages, RSS at the end within 10% of its value after warm-up. */
  pass: { errors: boolean; leakedPages: boolean; rss: boolean; all: boolean };
}

/** The value of an unlabelled series in Prometheus text, or null. */
export function metricValue(text: string, name: string): number | null {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (!rest.startsWith(' ')) continue;
    const v = Number(rest.trim().split(/\s+/)[0]);
    return Number.isFinite(v) ? v : null;
  }
  return null;
}

export async function sampleServer(baseUrl: string, t: number, apiKey?: string): Promise<ServerSample> {
  const none: ServerSample = { t, rssBytes: null, kvPagesUsed: null, running: null, waiting: null };
  try {
    const r = await fetchText(`${baseUrl}/metrics`, { apiKey, timeoutMs: 10000 });
    if (r.status !== 200) return none;
    return {
      t,
      rssBytes: metricValue(r.text, 'process_resident_memory_bytes'),
      kvPagesUsed: metricValue(r.text, 'sift:kv_cache_pages_used'),
      running: metricValue(r.text, 'sift:num_requests_running'),
      waiting: metricValue(r.text, 'sift:num_requests_waiting'),
    };
  } catch {
    return none;
  }
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** mulberry32. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What every soak request shares: the model, the attention field (sift only), the prompt-length calibration. */
export interface SoakWorkload {
  model: string;
  attention: WorkloadOptions['attention'];
  calibration: Calibration;
}

/** The i-th request of the mix: chat or completions, short or long, max_tokens in [minTokens, maxTokens]. */
export function soakRequest(plan: SoakPlan, base: SoakWorkload, i: number, r: () => number): RequestSpec {
  const api = r() < 0.5 ? 'chat' : 'completions';
  const tokens = plan.minTokens + Math.floor(r() * (plan.maxTokens - plan.minTokens + 1));
  const o: WorkloadOptions = {
    ...base,
    api,
    maxTokens: tokens,
    longMaxTokens: tokens,
    promptLens: plan.promptLens,
    // no sessions in the soak mix
    turns: 1,
    turnTokens: 1,
    conversations: 1,
  };
  const seed = plan.seed * 1_000_003 + i;
  if (plan.promptLens.length > 0 && r() < 0.5) {
    return longRequest(o, seed, plan.promptLens[Math.floor(r() * plan.promptLens.length)]);
  }
  return shortRequest(o, seed);
}

export interface SoakHooks {
  signal?: AbortSignal;
  apiKey?: string;
  onProgress?: (p: {
    phase: 'warm-up' | 'soak' | 'drain';
    elapsedMs: number;
    ok: number;
    cut: number;
    errors: number;
    last: ServerSample | null;
  }) => void;
}

export async function runSoak(
  client: SseClient,
  baseUrl: string,
  plan: SoakPlan,
  workload: SoakWorkload,
  hooks: SoakHooks = {},
): Promise<SoakResult> {
  const r = rng(plan.seed);
  const t0 = performance.now();
  const warmEnd = t0 + plan.warmupMs;
  const end = warmEnd + plan.durationMs;
  const samples: ServerSample[] = [];
  const outcomes: { o: RequestOutcome; cut: boolean }[] = [];
  let started = 0;
  let ok = 0;
  let cut = 0;
  let errors = 0;
  // When to cut: a random moment within the typical (median) request so far, so that nearly every chosen request is
  // cut while queued, prefilling or streaming (one that ends first simply completes).
  const e2eSeen: number[] = [];
  const cutWindowMs = () => {
    if (e2eSeen.length < 5) return 5000;
    const s = [...e2eSeen].sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)];
  };

  const sleep = (ms: number) => new Promise((res) => setTimeout(res, Math.max(1, ms)));
  const sampler = (async () => {
    while (performance.now() < end && !hooks.signal?.aborted) {
      const now = performance.now();
      const s = await sampleServer(baseUrl, now - t0, hooks.apiKey);
      samples.push(s);
      const phase = now < warmEnd ? 'warm-up' : 'soak';
      hooks.onProgress?.({ phase, elapsedMs: now - t0, ok, cut, errors, last: s });
      // one sample right at the end of the warm-up, then every sampleMs
      const next = now < warmEnd ? Math.min(plan.sampleMs, warmEnd - now) : plan.sampleMs;
      await sleep(Math.min(next, end - performance.now()));
    }
  })();

  const worker = async () => {
    while (performance.now() < end && !hooks.signal?.aborted) {
      const i = started++;
      const spec = soakRequest(plan, workload, i, r);
      const willCut = r() < plan.disconnectShare;
      const ac = new AbortController();
      const onStop = () => ac.abort();
      hooks.signal?.addEventListener('abort', onStop, { once: true });
      let timer: NodeJS.Timeout | null = null;
      if (willCut) timer = setTimeout(() => ac.abort(), r() * cutWindowMs());
      const o = await client.send(spec, ac.signal);
      if (timer) clearTimeout(timer);
      hooks.signal?.removeEventListener('abort', onStop);
      const wasCut = o.aborted;
      if (wasCut) cut++;
      else if (o.error) errors++;
      else {
        ok++;
        e2eSeen.push(o.e2eMs);
        if (e2eSeen.length > 200) e2eSeen.shift();
      }
      outcomes.push({ o, cut: wasCut });
    }
  };
  await Promise.all(Array.from({ length: plan.concurrency }, () => worker()));
  await sampler;

  // Drain: the server should go idle (nothing running or waiting) with every page back.
  let last = await sampleServer(baseUrl, performance.now() - t0, hooks.apiKey);
  const idleBy = performance.now() + plan.idleTimeoutMs;
  const idle = (s: ServerSample) => s.running === 0 && s.waiting === 0;
  while (!idle(last) && last.running !== null && performance.now() < idleBy) {
    hooks.onProgress?.({ phase: 'drain', elapsedMs: performance.now() - t0, ok, cut, errors, last });
    await new Promise((res) => setTimeout(res, 500));
    last = await sampleServer(baseUrl, performance.now() - t0, hooks.apiKey);
  }
  samples.push(last);

  const errorsByKind: Record<string, number> = {};
  const errorExamples: Record<string, string> = {};
  const finishReasons: Record<string, number> = {};
  let outputTokensTotal = 0;
  const e2e: number[] = [];
  for (const { o, cut: c } of outcomes) {
    if (c) continue;
    if (o.error) {
      errorsByKind[o.error] = (errorsByKind[o.error] ?? 0) + 1;
      errorExamples[o.error] ??= o.errorDetail ?? '';
      continue;
    }
    finishReasons[o.finishReason ?? 'none'] = (finishReasons[o.finishReason ?? 'none'] ?? 0) + 1;
    outputTokensTotal += o.outputTokens;
    e2e.push(o.e2eMs);
  }
  // RSS moves with every garbage collection: the value after warm-up is the median of the first three samples
  // taken after it, the end value the median of the last three (the one after the drain included).
  const rssAt = (xs: ServerSample[]) => median(xs.map((s) => s.rssBytes).filter((x): x is number => x !== null));
  const measuredSamples = samples.filter((s) => s.t >= plan.warmupMs);
  const startRss = rssAt(measuredSamples.slice(0, 3));
  const endRss = rssAt(measuredSamples.slice(-3));
  const rssVals = samples.map((s) => s.rssBytes).filter((x): x is number => x !== null);
  const changePct = startRss !== null && endRss !== null ? ((endRss - startRss) / startRss) * 100 : null;
  const leakedPages = idle(last) ? last.kvPagesUsed : null;
  const pass = {
    errors: errors === 0,
    leakedPages: leakedPages === 0,
    rss: changePct !== null && changePct <= 10,
    all: false,
  };
  pass.all = pass.errors && pass.leakedPages && pass.rss;
  return {
    warmupS: plan.warmupMs / 1000,
    durationS: plan.durationMs / 1000,
    concurrency: plan.concurrency,
    disconnectShare: plan.disconnectShare,
    requests: {
      started,
      ok,
      cutByClient: cut,
      errors,
      staleSocketRetries: outcomes.filter((x) => x.o.staleSocketRetry).length,
    },
    errorsByKind,
    errorExamples,
    finishReasons,
    e2eMs: summarize(e2e),
    outputTokensTotal,
    leakedPages,
    wentIdle: idle(last),
    rss: {
      afterWarmupBytes: startRss,
      endBytes: endRss,
      peakBytes: rssVals.length ? Math.max(...rssVals) : null,
      changePct,
    },
    samples,
    pass,
  };
}

/** The soak's figures as a markdown table. */
export function soakTable(s: SoakResult): string {
  const mib = (b: number | null) => (b === null ? '-' : `${(b / 2 ** 20).toFixed(1)} MiB`);
  const rows: [string, string][] = [
    ['duration (after warm-up)', `${s.durationS} s (+ ${s.warmupS} s warm-up)`],
    ['concurrency', String(s.concurrency)],
    [
      'requests started / ok / cut by client',
      `${s.requests.started} / ${s.requests.ok} / ${s.requests.cutByClient} (${((100 * s.requests.cutByClient) / Math.max(1, s.requests.started)).toFixed(0)}% cut; ${(100 * s.disconnectShare).toFixed(0)}% chosen)`,
    ],
    [
      'errors (requests not cut)',
      `${s.requests.errors}${s.requests.errors ? ` ${JSON.stringify(s.errorsByKind)}` : ''}`,
    ],
    ['finish reasons', JSON.stringify(s.finishReasons)],
    ['leaked KV pages (idle after the run)', s.leakedPages === null ? '-' : String(s.leakedPages)],
    [
      'RSS after warm-up / end / peak',
      `${mib(s.rss.afterWarmupBytes)} / ${mib(s.rss.endBytes)} / ${mib(s.rss.peakBytes)}`,
    ],
    ['RSS change', s.rss.changePct === null ? '-' : `${s.rss.changePct.toFixed(1)}%`],
    ['e2e p50 / p99 (ok requests)', `${s.e2eMs.p50?.toFixed(0) ?? '-'} / ${s.e2eMs.p99?.toFixed(0) ?? '-'} ms`],
    ['targets met', s.pass.all ? 'yes' : `no (${JSON.stringify(s.pass)})`],
  ];
  return ['| | |', '|---|---|', ...rows.map(([k, v]) => `| ${k} | ${v} |`)].join('\n');
}
