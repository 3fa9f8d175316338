/**
 * WebGPU errors never turn into tokens. A validation error (a destroyed or oversized buffer, a bad bind group) makes
 * Dawn drop the whole submit, and an out-of-memory error leaves a buffer invalid: the step's read-back then returns
 * whatever the buffers held before, which would be sampled as if it were this step's logits. FaultCheck runs one
 * step's GPU work and throws DEVICE_FAULT when WebGPU reported such an error:
 *   - every step: the device's uncaptured errors (Gpu.takeErrors; costs nothing when there are none);
 *   - every `scopeInterval` steps: error scopes for 'validation' and 'out-of-memory' pushed around the step's GPU
 *     calls (WebGPU's own attribution; their cost on lavapipe is in bench/results/RELIABILITY.md).
 * 0 turns the scopes off (uncaptured errors are still checked); tests use 1.
 *
 * Steps overlap (the engine encodes and submits the next step while one runs, chained on its tokens): a step's
 * scopes are pushed before its GPU calls and popped as soon as they are issued, before the step is awaited, so each
 * step's scopes bracket exactly its own calls and scopes never interleave (WebGPU pops them LIFO, per device). An
 * uncaptured error is taken by the first step to finish after it; every fault ends the engine, so which of two
 * overlapping steps reports it changes nothing.
 */
import { SiftError } from '../config/errors.js';
import type { Gpu } from './runtime.js';

export class FaultCheck {
  private steps = 0;
  /** Steps run with error scopes, since start. */
  scopedSteps = 0;

  constructor(
    private readonly gpu: Gpu,
    readonly scopeInterval: number,
  ) {
    if (!Number.isInteger(scopeInterval) || scopeInterval < 0) {
      throw new SiftError('CONFIG_INVALID', `FaultCheck: scopeInterval must be an integer >= 0, got ${scopeInterval}`);
    }
  }

  /**
   * Runs a step: `submit` issues every GPU call of the step (encode, write, submit, the read-back copies) before it
   * first yields, and resolves with the step's result (after its read-back). DEVICE_FAULT if WebGPU reported an error.
   */
  async run<T>(submit: () => Promise<T>): Promise<T> {
    const device = this.gpu.device;
    const scoped = this.scopeInterval > 0 && this.steps % this.scopeInterval === 0;
    this.steps++;
    if (scoped) {
      this.scopedSteps++;
      device.pushErrorScope('out-of-memory');
      device.pushErrorScope('validation');
    }
    let pending: Promise<T>;
    try {
      pending = submit();
    } catch (e) {
      pending = Promise.reject(e);
    }
    // LIFO, right after the step's calls: the validation scope first. A lost device answers null (or rejects): its
    // loss is reported elsewhere.
    const pops = scoped ? [device.popErrorScope(), device.popErrorScope()].map((p) => p.catch(() => null)) : [];
    let result: T | undefined;
    let failure: unknown = null;
    try {
      result = await pending;
    } catch (e) {
      failure = e;
    }
    const messages: string[] = [];
    for (const e of await Promise.all(pops)) if (e) messages.push(e.message);
    messages.push(...this.gpu.takeErrors());
    if (failure !== null) throw failure;
    if (messages.length > 0) {
      throw new SiftError(
        'DEVICE_FAULT',
        `WebGPU reported ${messages.length} error(s) during an engine step; its results were discarded: ${messages[0]}`,
      );
    }
    return result as T;
  }
}
