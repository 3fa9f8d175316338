/**
 * WebGPU errors never turn into tokens. A validation error (a destroyed or oversized buffer, a bad bind group) makes
 * Dawn drop the whole submit, and an out-of-memory error leaves a buffer invalid: the step's read-back then returns
 * whatever the buffers held before, which would be sampled as if it were this step's logits. FaultCheck runs one
 * step's GPU work and throws DEVICE_FAULT when WebGPU reported such an error:
 *   - every step: the device's uncaptured errors (Gpu.takeErrors; costs nothing when there are none);
 *   - every `scopeInterval` steps: error scopes for 'validation' and 'out-of-memory' pushed around the step and
 *     popped after it (WebGPU's own attribution; their cost on lavapipe is in bench/results/RELIABILITY.md).
 * 0 turns the scopes off (uncaptured errors are still checked); tests use 1.
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

  /** Runs `work` (which submits the step and awaits its read-back); DEVICE_FAULT if WebGPU reported an error. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    const device = this.gpu.device;
    const scoped = this.scopeInterval > 0 && this.steps % this.scopeInterval === 0;
    this.steps++;
    if (scoped) {
      this.scopedSteps++;
      device.pushErrorScope('out-of-memory');
      device.pushErrorScope('validation');
    }
    let result: T | undefined;
    let failure: unknown = null;
    try {
      result = await work();
    } catch (e) {
      failure = e;
    }
    const messages: string[] = [];
    if (scoped) {
      // LIFO: the validation scope first. A lost device answers null (or rejects): its loss is reported elsewhere.
      const popped = await Promise.all(
        [device.popErrorScope(), device.popErrorScope()].map((p) => p.catch(() => null)),
      );
      for (const e of popped) if (e) messages.push(e.message);
    }
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
