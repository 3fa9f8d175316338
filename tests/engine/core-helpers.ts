/**
 * Shared setup of the engine-core tests: a tiny synthetic checkpoint, engine cores over the CPU executor (the
 * reference forward pass, no GPU) or the GPU executor (ModelRunner on the test GPU), event collection.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModelConfig } from '../../checkpoint/config.js';
import { SYNTHETIC_VARIANTS, writeSyntheticCheckpoint } from '../../checkpoint/synthetic.js';
import { engineConfig } from '../../config/engine.js';
import type { GenerationEvent, GenerationRequest, RequestHandle } from '../../engine/client.js';
import { EngineCore, type EngineCoreOptions } from '../../engine/core.js';
import type { KernelChoice } from '../../model/forward.js';
import { KvStorage } from '../../model/kv-storage.js';
import { ModelRunner } from '../../model/runner.js';
import type { Gpu } from '../../shaders/runtime.js';
import { CpuExecutor } from '../helpers/cpu-executor.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/rng.js';

/** The smallest variant: Llama, f32, 64 hidden, 2 layers, vocab 256. */
export const VARIANT = SYNTHETIC_VARIANTS[0];

export function checkpointDir(): { dir: string; cleanup: () => void } {
  const root = mkdtempSync(path.join(os.tmpdir(), 'sift-core-'));
  const dir = path.join(root, VARIANT.name);
  writeSyntheticCheckpoint(dir, VARIANT);
  return { dir, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

export interface CoreSetup {
  maxBatchTokens?: number;
  maxSeqs?: number;
  pageSize?: number;
  maxContext?: number;
  /** KV storage size, as --kv-cache-mib. Default 1. */
  kvCacheMib?: number;
  /** CPU executor only: extra time per step (CpuExecutorOptions.stepDelayMs). */
  stepDelayMs?: number;
  /** GPU executor only: kernel variants (default per adapter). */
  kernels?: KernelChoice;
  /** GPU executor: steps between WebGPU error-scope checks; default 1 (every step, as tests should). */
  errorScopeInterval?: number;
}

function setupConfig(s: CoreSetup) {
  return engineConfig({
    flags: {
      pageSize: s.pageSize ?? 16,
      kvCacheMib: s.kvCacheMib ?? 1,
      maxBatchTokens: s.maxBatchTokens ?? 64,
      maxSeqs: s.maxSeqs ?? 16,
      maxContext: s.maxContext ?? 256,
      errorScopeInterval: s.errorScopeInterval ?? 1,
    },
  });
}

/** The CPU executor sized as ModelRunner.load sizes the GPU one for the same flags (f16 K/V pages in kvCacheMib). */
export function cpuExecutor(dir: string, s: CoreSetup = {}): CpuExecutor {
  const cfg = setupConfig(s);
  const bytesPerPage = KvStorage.bytesPerTokenOf(loadModelConfig(dir)) * cfg.pageSize;
  return new CpuExecutor(dir, {
    pageSize: cfg.pageSize,
    numPages: Math.max(1, Math.floor((cfg.kvCacheMib * 2 ** 20) / bytesPerPage)),
    maxBatchTokens: cfg.maxBatchTokens ?? 64,
    maxSeqs: cfg.maxSeqs,
    maxContext: cfg.maxContext ?? 256,
    stepDelayMs: s.stepDelayMs,
  });
}

/** An engine core over the CPU executor (no GPU). */
export function makeCore(dir: string, s: CoreSetup = {}, opts: EngineCoreOptions = {}): EngineCore {
  return EngineCore.create(cpuExecutor(dir, s), opts);
}

/** An engine core over the GPU executor on the test GPU (or `gpu`). */
export async function makeGpuCore(
  dir: string,
  s: CoreSetup & { gpu?: Gpu } = {},
  opts: EngineCoreOptions = {},
): Promise<EngineCore> {
  const gpu = s.gpu ?? (await testGpu());
  return EngineCore.create(await ModelRunner.load(dir, setupConfig(s), { gpu, kernels: s.kernels }), opts);
}

export function greedy(
  id: string,
  promptIds: number[],
  maxTokens: number,
  extra: Partial<GenerationRequest> = {},
): GenerationRequest {
  return {
    id,
    promptIds,
    maxTokens,
    sampling: { temperature: 0, topK: 0, topP: 1, seed: null },
    stopIds: [],
    ...extra,
  };
}

export interface Collected {
  tokens: number[];
  events: GenerationEvent[];
  done: Extract<GenerationEvent, { type: 'done' }>;
}

export async function collect(h: RequestHandle, onEvent?: (ev: GenerationEvent) => void): Promise<Collected> {
  const events: GenerationEvent[] = [];
  for await (const ev of h) {
    events.push(ev);
    onEvent?.(ev);
  }
  const done = events[events.length - 1];
  if (done?.type !== 'done') throw new Error(`request ${h.id} ended without a done event`);
  const tokens = events.flatMap((e) => (e.type === 'token' ? [e.id] : []));
  return { tokens, events, done };
}

export function randomPrompt(rng: Rng, n: number, vocab = VARIANT.vocab): number[] {
  // ids 3.. (avoid bos/eos so no prompt looks special)
  return Array.from({ length: n }, () => rng.int(3, vocab - 1));
}

export { Rng };
