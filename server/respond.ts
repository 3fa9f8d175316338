/**
 * Runs a planned generation request and answers it, streaming or not, in a route's wire format: submits one
 * engine request per choice (all or none: a rejected submit cancels the ones before it, and its error names the
 * body field, see params.ts), cancels them all at once if the client goes away, reports engine failures (a lost
 * GPU -> 503, or an SSE error event mid-stream), observes metrics and logs one summary line per request.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isSiftError, SiftError } from '../config/errors.js';
import type { RequestHandle } from '../engine/client.js';
import type { TextSide } from '../text/text.js';
import { Choice, type ChoiceResult, type TokenInfo } from './choice.js';
import type { EngineState } from './engine-state.js';
import { mapError } from './errors.js';
import type { ServerMetrics } from './metrics.js';
import { inWireWords } from './params.js';
import type { Plan } from './plan.js';
import type { FinishReasonWire, Usage } from './protocol.js';
import { SseWriter } from './sse.js';

/** How a route shapes its choices (chat: message/delta; completions: text). */
export interface WireFormat {
  /** Response/chunk `object` for non-streamed and streamed answers. */
  object: string;
  chunkObject: string;
  /** Choice object of the first chunk of each choice, or null (completions send none). */
  startChoice(index: number): unknown | null;
  /** Choice object of a text delta, or null to send nothing now (text held, e.g. a tool call in the making). */
  deltaChoice(index: number, text: string, tokens: TokenInfo[] | null): unknown | null;
  /** Choice objects of the last chunks of a choice (what was held, then the finish reason). */
  finishChoice(index: number, reason: FinishReasonWire): unknown[];
  /** Choice object of a non-streamed answer. */
  fullChoice(index: number, result: ChoiceResult, tokens: TokenInfo[] | null): unknown;
}

export interface RespondContext {
  request: FastifyRequest;
  reply: FastifyReply;
  state: EngineState;
  metrics: ServerMetrics;
  text: TextSide;
  modelName: string;
  /** Response id, e.g. "chatcmpl-...". */
  id: string;
  keepAliveMs: number;
  /** performance.now() when the request arrived. */
  startedAt: number;
}

function submitAll(ctx: RespondContext, plan: Plan): RequestHandle[] {
  const { engine } = ctx.state.require();
  const count = plan.requests.length;
  if (count > engine.maxWaiting) {
    // Admitted all or none into a queue that holds fewer: it could never run, on an idle server too (not a 429).
    const n = count / plan.prompts.length;
    throw new SiftError(
      'INVALID_ARGUMENT',
      `the request asks for ${count} completions (${plan.prompts.length} prompt(s) x n=${n}); this server queues at most ${engine.maxWaiting} at once`,
      { param: n > 1 ? 'n' : plan.names.prompt },
    );
  }
  const handles: RequestHandle[] = [];
  try {
    for (const r of plan.requests) handles.push(engine.submit(r));
  } catch (e) {
    for (const h of handles) h.cancel();
    // constraints the engine never took (it disposes those of requests it admitted)
    for (const r of plan.requests.slice(handles.length)) r.constraint?.dispose();
    if (isSiftError(e, 'DEVICE_LOST') || isSiftError(e, 'DEVICE_FAULT')) ctx.state.markLost(e);
    throw inWireWords(e, plan.names, plan.prompts[plan.promptOf[handles.length]]);
  }
  return handles;
}

function usageOf(plan: Plan, results: ChoiceResult[]): Usage {
  let prompt = 0;
  let cached = 0;
  let completion = 0;
  let steps = 0;
  let attended = 0;
  let context = 0;
  const skipped: number[] = [];
  const counted = new Set<number>();
  results.forEach((r, i) => {
    completion += r.usage.completionTokens;
    const a = r.attention;
    steps += a.decodeSteps;
    attended += a.meanTokensAttended * a.decodeSteps;
    context += a.meanContextTokens * a.decodeSteps;
    if (a.prefillKeyBlocksSkippedShare !== null) skipped.push(a.prefillKeyBlocksSkippedShare);
    if (counted.has(plan.promptOf[i])) return;
    counted.add(plan.promptOf[i]);
    prompt += r.usage.promptTokens;
    cached += r.usage.cachedTokens;
  });
  const r2 = (x: number) => Math.round(x * 100) / 100;
  const attention = {
    mode: results.some((r) => r.attention.mode === 'sparse') ? ('sparse' as const) : ('dense' as const),
    requested_mode: plan.attentionMode,
    mean_tokens_attended: steps > 0 ? r2(attended / steps) : 0,
    mean_context_tokens: steps > 0 ? r2(context / steps) : 0,
    prefill_key_blocks_skipped_share: skipped.length
      ? Math.round((skipped.reduce((x, y) => x + y, 0) / skipped.length) * 10000) / 10000
      : null,
  };
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
    attention,
  };
}

function finish(ctx: RespondContext, plan: Plan, choices: Choice[], outcome: string): void {
  const results = choices.map((c) => c.result).filter((r): r is ChoiceResult => r !== null);
  for (const r of results) {
    const tpot =
      r.ttftMs !== null && r.usage.completionTokens > 1 ? (r.e2eMs - r.ttftMs) / (r.usage.completionTokens - 1) : null;
    ctx.metrics.observe({
      finishReason: outcome === 'client_closed' ? 'abort' : r.finishReason,
      attentionMode: r.attention.mode,
      ttftMs: r.ttftMs,
      tpotMs: tpot,
      e2eMs: r.e2eMs,
    });
    if (r.engineFinish === 'timeout')
      ctx.request.log.warn(
        { maxTokens: plan.requests[0].maxTokens },
        'request timed out; answering with what was generated (finish_reason "timeout")',
      );
  }
  if (outcome === 'error')
    ctx.metrics.observe({
      finishReason: 'error',
      attentionMode: plan.attentionMode,
      ttftMs: null,
      tpotMs: null,
      e2eMs: performance.now() - ctx.startedAt,
    });
  const u = results.length ? usageOf(plan, results) : null;
  const ttfts = results.map((r) => r.ttftMs).filter((t): t is number => t !== null);
  ctx.request.log.info(
    {
      promptTokens: u?.prompt_tokens ?? 0,
      completionTokens: u?.completion_tokens ?? 0,
      ttftMs: ttfts.length ? Math.round(Math.min(...ttfts)) : null,
      durationMs: Math.round(performance.now() - ctx.startedAt),
      finishReason: outcome === 'ok' ? [...new Set(results.map((r) => r.finishReason))].join(',') : outcome,
      attentionMode: results[0]?.attention.mode ?? plan.attentionMode,
      n: plan.requests.length,
      stream: plan.stream,
    },
    'request done',
  );
}

/** Answers the request; resolves when the response is complete (or the client has gone). */
export async function respond(ctx: RespondContext, plan: Plan, fmt: WireFormat): Promise<void> {
  const handles = submitAll(ctx, plan);
  const choices = handles.map(
    (h, i) => new Choice(h, plan.requests[i], i, ctx.text, plan.stops, ctx.startedAt, plan.topLogprobs !== null),
  );
  let gone = false;
  const res = ctx.reply.raw;
  const onClose = () => {
    if (res.writableFinished) return;
    gone = true;
    for (const h of handles) h.cancel();
  };
  res.on('close', onClose);
  const created = Math.floor(Date.now() / 1000);
  const envelope = (object: string, choicesOut: unknown[], usage?: Usage | null) => ({
    id: ctx.id,
    object,
    created,
    model: ctx.modelName,
    choices: choicesOut,
    ...(usage !== undefined ? { usage } : {}),
  });
  const lp = (t: TokenInfo[]) => (plan.topLogprobs === null ? null : t);

  if (!plan.stream) {
    try {
      await Promise.all(
        choices.map(async (c) => {
          for await (const _ of c.updates());
        }),
      );
    } catch (e) {
      for (const h of handles) h.cancel();
      if (isSiftError(e, 'DEVICE_LOST') || isSiftError(e, 'DEVICE_FAULT')) ctx.state.markLost(e);
      finish(ctx, plan, choices, 'error');
      throw e;
    } finally {
      res.off('close', onClose);
    }
    const results = choices.map((c) => c.result as ChoiceResult);
    finish(ctx, plan, choices, gone ? 'client_closed' : 'ok');
    if (gone) return;
    await ctx.reply.send(
      envelope(
        fmt.object,
        results.map((r, i) => fmt.fullChoice(i, r, lp(r.tokens))),
        usageOf(plan, results),
      ),
    );
    return;
  }

  ctx.reply.hijack();
  const sse = new SseWriter(res, ctx.keepAliveMs);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(ctx.reply.getHeaders())) if (typeof v === 'string') headers[k] = v;
  sse.open(headers);
  const usageField = plan.includeUsage ? null : undefined;
  const chunk = (c: unknown) => envelope(fmt.chunkObject, [c], usageField);
  for (const c of choices) {
    const s = fmt.startChoice(c.index);
    if (s !== null) sse.data(chunk(s));
  }
  let failure: unknown = null;
  await Promise.all(
    choices.map(async (c) => {
      try {
        for await (const u of c.updates(() => sse.keepAlive())) {
          if (gone || failure) continue;
          if (u.type === 'delta') {
            const d = fmt.deltaChoice(c.index, u.text, lp(u.tokens));
            if (d !== null) sse.data(chunk(d));
          } else for (const f of fmt.finishChoice(c.index, u.reason)) sse.data(chunk(f));
        }
      } catch (e) {
        failure ??= e;
        for (const h of handles) h.cancel();
      }
    }),
  );
  res.off('close', onClose);
  if (failure) {
    if (isSiftError(failure, 'DEVICE_LOST') || isSiftError(failure, 'DEVICE_FAULT')) ctx.state.markLost(failure);
    const m = mapError(failure);
    if (m.internal) ctx.request.log.error({ err: failure }, 'generation failed mid-stream');
    sse.data(m.body);
    sse.done();
    finish(ctx, plan, choices, 'error');
    return;
  }
  if (!gone && plan.includeUsage) {
    const results = choices.map((c) => c.result as ChoiceResult);
    sse.data(envelope(fmt.chunkObject, [], usageOf(plan, results)));
  }
  if (gone) sse.close();
  else sse.done();
  finish(ctx, plan, choices, gone ? 'client_closed' : 'ok');
}
