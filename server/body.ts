/**
 * JSON request bodies. Small ones go through fastify's own parser; bodies of BIG_BODY_BYTES or more are parsed on a
 * worker thread (server/json-worker.ts): parsing 7 MB of JSON takes tens of ms of CPU, during which /health and
 * running streams would wait. The main thread only concatenates the bytes and receives the parsed value (a
 * structured clone, a copy rather than a parse). Errors are fastify's (400 invalid JSON), whichever path ran.
 */
import { Worker } from 'node:worker_threads';
import fastify, { type FastifyInstance } from 'fastify';
import { definePlugin } from './plugin.js';

/** Bodies of at least this many bytes are parsed off the main thread. */
export const BIG_BODY_BYTES = 1 << 20;

type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false };

/** One worker thread, started on the first big body, unreferenced while idle. */
export class JsonParseWorker {
  private worker: Worker | null = null;
  private next = 0;
  private readonly pending = new Map<number, (r: Reply) => void>();

  parse(body: Buffer): Promise<Reply> {
    const w = this.start();
    const id = this.next++;
    // hand over the bytes without a copy when the buffer owns its memory (large Buffer.concat results do)
    const own = body.byteOffset === 0 && body.byteLength === body.buffer.byteLength;
    const ab = own ? (body.buffer as ArrayBuffer) : body.buffer.slice(body.byteOffset, body.byteOffset + body.length);
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      w.ref();
      w.postMessage({ id, body: ab }, [ab as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./json-worker.js', import.meta.url));
    w.unref();
    w.on('message', (r: Reply) => {
      const p = this.pending.get(r.id);
      this.pending.delete(r.id);
      if (this.pending.size === 0) w.unref();
      p?.(r);
    });
    const fail = () => {
      if (this.worker === w) this.worker = null;
      for (const [id, p] of this.pending) p({ id, ok: false });
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', fail);
    this.worker = w;
    return w;
  }
}

async function bodyPlugin(app: FastifyInstance): Promise<void> {
  const small = app.getDefaultJsonParser('error', 'ignore');
  const worker = new JsonParseWorker();
  app.addHook('onClose', () => worker.close());
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const buf = body as Buffer;
    if (buf.length < BIG_BODY_BYTES) {
      small(req, buf as unknown as string, done); // secure-json-parse takes a Buffer as well
      return;
    }
    worker
      .parse(buf)
      .then((r) =>
        r.ok ? done(null, r.value) : done(new fastify.errorCodes.FST_ERR_CTP_INVALID_JSON_BODY(), undefined),
      );
  });
}

export default definePlugin(bodyPlugin, { name: 'sift-body' });
