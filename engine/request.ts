/**
 * One live request inside the engine core: its scheduler state, sampler, limits, timings and the event queue its
 * handle's async iterator drains. The core writes; the server reads (single consumer).
 */
import type { AttentionUsage, FinishReason, GenerationEvent, GenerationRequest, RequestHandle } from './client.js';
import type { Sampler } from './sampler.js';
import type { SeqState } from './scheduler.js';

export class LiveRequest implements RequestHandle {
  readonly id: string;
  readonly stop: ReadonlySet<number>;
  readonly output: number[] = [];
  /** Submission time (performance.now()). */
  readonly submittedAt = performance.now();
  /** First admission into the running batch. */
  admittedAt: number | null = null;
  firstTokenAt: number | null = null;
  /** Prompt tokens served from the prefix cache at the first admission. */
  cachedTokens = 0;
  /** Sums over decode steps of the KV tokens read and of the context, the steps, and those that read less. */
  attendedSum = 0;
  denseSum = 0;
  decodeSteps = 0;
  sparseSteps = 0;
  /** Causal key blocks of block-sparse prefill over the prompt, and those kept. */
  prefillBlocksTotal = 0;
  prefillBlocksKept = 0;
  promptCounted = false;
  timer: NodeJS.Timeout | null = null;
  finishReason: FinishReason | null = null;
  private readonly events: GenerationEvent[] = [];
  private waiter: (() => void) | null = null;

  constructor(
    readonly req: GenerationRequest,
    readonly seq: SeqState,
    readonly sampler: Sampler,
    /** prompt + maxTokens: the request ends with 'length' when its tokens reach it. */
    readonly maxLen: number,
    private readonly onCancel: (r: LiveRequest) => void,
  ) {
    this.id = req.id;
    this.stop = new Set(req.stopIds);
  }

  get finished(): boolean {
    return this.finishReason !== null;
  }

  cancel(): void {
    if (!this.finished) this.onCancel(this);
  }

  emit(ev: GenerationEvent): void {
    this.events.push(ev);
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Ends the request with its 'done' event (once). */
  end(reason: FinishReason, requestedMode: AttentionUsage['mode'], error?: Error): void {
    if (this.finished) return;
    this.finishReason = reason;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const now = performance.now();
    this.emit({
      type: 'done',
      finishReason: reason,
      usage: {
        promptTokens: this.seq.promptLen,
        completionTokens: this.output.length,
        cachedTokens: this.cachedTokens,
      },
      attention: {
        mode: this.sparseSteps > 0 ? 'sparse' : 'dense',
        requestedMode,
        decodeSteps: this.decodeSteps,
        meanTokensAttended: this.decodeSteps > 0 ? this.attendedSum / this.decodeSteps : 0,
        meanContextTokens: this.decodeSteps > 0 ? this.denseSum / this.decodeSteps : 0,
        prefillKeyBlocksSkippedShare:
          this.prefillBlocksTotal > 0 ? 1 - this.prefillBlocksKept / this.prefillBlocksTotal : null,
      },
      timings: {
        queuedMs: (this.admittedAt ?? now) - this.submittedAt,
        ttftMs: this.firstTokenAt === null ? null : this.firstTokenAt - this.submittedAt,
        durationMs: now - this.submittedAt,
      },
      ...(error ? { error } : {}),
    });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<GenerationEvent> {
    try {
      for (;;) {
        const ev = this.events.shift();
        if (ev) {
          yield ev;
          if (ev.type === 'done') return;
          continue;
        }
        await new Promise<void>((resolve) => {
          this.waiter = resolve;
        });
      }
    } finally {
      // The reader went away (e.g. the client disconnected): stop generating for nobody.
      this.cancel();
    }
  }
}
