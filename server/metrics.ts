/**
 * Prometheus metrics under vLLM's names with the `sift:` prefix, in a registry per app (tests build many apps), plus
 * prom-client's standard process metrics (process_resident_memory_bytes, ...) that the soak run reads.
 * Per-request figures (latencies, finish reasons, attention modes) are observed when a request ends; engine
 * totals and gauges (queue depths, KV usage, preemptions, prefix cache, share of KV attended) are read from
 * engine.stats() at scrape time.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineStats } from '../engine/client.js';

const LATENCY_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160,
];
const TPOT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5];

/** What one finished request contributes. */
export interface RequestObservation {
  /** The finish reason as sent ("stop", "length", "timeout"), "abort" when the client went away, or "error". */
  finishReason: string;
  attentionMode: 'dense' | 'sparse';
  ttftMs: number | null;
  /** Decode time over completion tokens after the first, when there were at least two. */
  tpotMs: number | null;
  e2eMs: number;
}

export class ServerMetrics {
  readonly registry = new Registry();
  private readonly ttft: Histogram;
  private readonly tpot: Histogram;
  private readonly e2e: Histogram;
  private readonly success: Counter<'finished_reason'>;
  private readonly attentionMode: Counter<'mode'>;

  constructor(stats: () => EngineStats | null) {
    const r = [this.registry];
    // process_resident_memory_bytes, nodejs_heap_size_used_bytes, event loop lag, ... (read at scrape time)
    collectDefaultMetrics({ register: this.registry });
    this.ttft = new Histogram({
      name: 'sift:time_to_first_token_seconds',
      help: 'Time to first token in seconds.',
      buckets: LATENCY_BUCKETS,
      registers: r,
    });
    this.tpot = new Histogram({
      name: 'sift:time_per_output_token_seconds',
      help: 'Time per output token (after the first) in seconds.',
      buckets: TPOT_BUCKETS,
      registers: r,
    });
    this.e2e = new Histogram({
      name: 'sift:e2e_request_latency_seconds',
      help: 'End-to-end request latency in seconds.',
      buckets: LATENCY_BUCKETS,
      registers: r,
    });
    this.success = new Counter({
      name: 'sift:request_success_total',
      help: 'Finished requests by finish reason.',
      labelNames: ['finished_reason'],
      registers: r,
    });
    this.attentionMode = new Counter({
      name: 'sift:attention_mode_requests_total',
      help: 'Requests by the decode attention that ran (sparse: some step read fewer KV tokens than its context).',
      labelNames: ['mode'],
      registers: r,
    });

    const gauge = (name: string, help: string, read: (s: EngineStats) => number) =>
      new Gauge({
        name,
        help,
        registers: r,
        collect() {
          const s = stats();
          this.set(s ? read(s) : 0);
        },
      });
    gauge('sift:num_requests_running', 'Requests in the running batch.', (s) => s.running);
    gauge('sift:num_requests_waiting', 'Requests waiting to be scheduled.', (s) => s.waiting);
    gauge('sift:kv_cache_usage_perc', 'KV cache usage (fraction of pages in use, 0..1).', (s) => s.kvUsage);
    gauge(
      'sift:kv_cache_pages_used',
      'KV pages held by live requests (prefix-cache pages no request holds are free); 0 when idle.',
      (s) => s.kvPagesUsed,
    );
    gauge(
      'sift:attention_kv_attended_share',
      'Share of the KV tokens dense attention would read that decode read, over all (layer, KV head) pairs incl. streaming heads.',
      (s) => s.attendedShare,
    );
    gauge(
      'sift:attention_selection_reuse_share',
      'Share of sparse decode steps that reused a page selection (reselected every reuse interval and after prefill).',
      (s) => s.selectionReuseShare,
    );
    gauge(
      'sift:attention_prefill_key_blocks_skipped_share',
      'Share of the causal key blocks block-sparse prefill skipped (0 when every prefill was dense).',
      (s) => s.prefillKeyBlocksSkippedShare,
    );
    gauge(
      'sift:prefix_cache_enabled',
      'Whether the prefix cache is on (1) or off (0: a model with streaming heads, whose rings a cached prefix would skip).',
      (s) => (s.prefixCacheEnabled ? 1 : 0),
    );
    gauge(
      'sift:attention_streaming_head_share',
      'Share of (layer, KV head) pairs that are streaming heads (sink + local window).',
      (s) => s.streamingHeadShare,
    );

    // Engine totals: a counter reset to the engine's running total on every scrape.
    const total = (name: string, help: string, read: (s: EngineStats) => number) =>
      new Counter({
        name,
        help,
        registers: r,
        collect() {
          const s = stats();
          this.reset();
          if (s) this.inc(read(s));
        },
      });
    total('sift:prompt_tokens_total', 'Prompt tokens processed.', (s) => s.promptTokens);
    total('sift:generation_tokens_total', 'Tokens generated.', (s) => s.generationTokens);
    total(
      'sift:num_preemptions_total',
      'Requests preempted (KV pages reclaimed, recomputed later).',
      (s) => s.preemptions,
    );
    total('sift:prefix_cache_queries_total', 'Prompt tokens looked up in the prefix cache.', (s) => s.prefixQueries);
    total('sift:prefix_cache_hits_total', 'Prompt tokens found in the prefix cache.', (s) => s.prefixHits);
  }

  observe(o: RequestObservation): void {
    this.success.inc({ finished_reason: o.finishReason });
    this.attentionMode.inc({ mode: o.attentionMode });
    this.e2e.observe(o.e2eMs / 1000);
    if (o.ttftMs !== null) this.ttft.observe(o.ttftMs / 1000);
    if (o.tpotMs !== null) this.tpot.observe(o.tpotMs / 1000);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
