/**
 * Tokenizing big inputs off the main thread. A chat template render and a tokenizer encode of a few MB of text
 * take long enough (and the ids of a long prompt are a large array to build) to stall the event loop: /health
 * and running streams would wait behind them. TextSide sends inputs of WORKER_MIN_CHARS or more to one worker
 * thread that holds its own copy of the text side (text/tokenize-worker.ts); smaller ones stay inline, where a
 * round trip would cost more than the work. Both paths give the same ids.
 */
import { Worker } from 'node:worker_threads';
import { type ErrorCode, SiftError } from '../config/errors.js';
import type { RenderOptions } from './chat-template.js';
import type { PromptLimit } from './text.js';

/** Inputs of at least this many characters are tokenized on the worker. */
export const WORKER_MIN_CHARS = 64 * 1024;

export type WorkerRequest =
  | { id: number; kind: 'prompt'; text: string; limit?: PromptLimit }
  | { id: number; kind: 'chat'; messages: unknown; limit?: PromptLimit; opts?: RenderOptions };

export type WorkerReply =
  | { id: number; ok: true; ids: Int32Array }
  | { id: number; ok: false; code: ErrorCode; message: string; param: string | null };

export class TokenizeWorker {
  private worker: Worker | null = null;
  private next = 0;
  private readonly pending = new Map<number, { resolve: (ids: number[]) => void; reject: (e: Error) => void }>();

  constructor(private readonly dir: string) {}

  encodePrompt(text: string, limit?: PromptLimit): Promise<number[]> {
    return this.send({ id: this.next++, kind: 'prompt', text, limit });
  }

  encodeChat(messages: unknown, limit?: PromptLimit, opts?: RenderOptions): Promise<number[]> {
    return this.send({ id: this.next++, kind: 'chat', messages, limit, opts });
  }

  /** Stops the worker (a later request starts a new one). */
  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }

  private send(m: WorkerRequest): Promise<number[]> {
    const w = this.start();
    return new Promise((resolve, reject) => {
      this.pending.set(m.id, { resolve, reject });
      w.ref(); // keep the process up while a request is out
      w.postMessage(m);
    });
  }

  /** Starts the worker thread if it is not running. */
  start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./tokenize-worker.js', import.meta.url), { workerData: { dir: this.dir } });
    w.unref();
    w.on('message', (r: WorkerReply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) w.unref();
      if (r.ok) p.resolve(Array.from(r.ids));
      else p.reject(new SiftError(r.code, r.message, r.param === null ? {} : { param: r.param }));
    });
    const fail = (e: Error) => {
      if (this.worker === w) this.worker = null;
      for (const p of this.pending.values()) {
        p.reject(new SiftError('INTERNAL', `the tokenizer worker failed: ${e.message}`, { cause: e }));
      }
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => {
      if (this.pending.size > 0) fail(new Error(`exited with code ${code}`));
      if (this.worker === w) this.worker = null;
    });
    this.worker = w;
    return w;
  }
}
