/**
 * The whole server over a real engine core without a GPU: a tiny random-init model written over the story vocab
 * (tests/helpers/tiny-text.ts, byte fallback, so any text encodes), the engine core on the CPU executor (the
 * reference forward pass), the model's own text side, and the fastify app. For tests where the request path, the
 * scheduler and the KV pages are the point (fuzzing, soak), not the kernels.
 */
import type { TestContext } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { type ServerConfig, serverConfig } from '../../config/server.js';
import { EngineCore, type EngineCoreOptions } from '../../engine/core.js';
import { buildApp } from '../../server/app.js';
import { loadText, type TextSide } from '../../text/text.js';
import { cpuExecutor } from '../engine/core-helpers.js';
import { STORY, scratchDir, wordPieces, writeTextSide, writeTinyLlama } from './tiny-text.js';

export const CPU_MODEL = 'story-tiny';

/** A story-vocab model directory: tokenizer + a 1-layer random-init Llama (untied, so greedy text varies). */
export function storyModelDir(): string {
  const dir = scratchDir(CPU_MODEL);
  const vocab = writeTextSide(dir, wordPieces(`${STORY} Tell me a story. Hello Hi x`), true);
  writeTinyLlama(dir, vocab, 11);
  return dir;
}

export interface CpuApp {
  app: FastifyInstance;
  core: EngineCore;
  text: TextSide;
}

/** The app over an engine core on the CPU executor; closed (app and core) when the test ends. */
export async function cpuApp(
  t: TestContext,
  opts: { config?: Partial<Record<keyof ServerConfig, unknown>>; core?: EngineCoreOptions; maxSeqs?: number } = {},
): Promise<CpuApp> {
  const dir = storyModelDir();
  const core = EngineCore.create(
    cpuExecutor(dir, { maxContext: 256, maxSeqs: opts.maxSeqs ?? 8, maxBatchTokens: 64, pageSize: 16 }),
    { modelName: CPU_MODEL, ...opts.core },
  );
  const text = loadText(dir);
  const app = await buildApp({
    engine: core,
    text,
    config: serverConfig({ flags: opts.config ?? {} }),
    modelName: CPU_MODEL,
  });
  t.after(async () => {
    await app.close();
    await core.shutdown(0);
  });
  return { app, core, text };
}
