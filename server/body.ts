/**
 * JSON request bodies. Small ones go through fastify's own parser; bodies of BIG_BODY_BYTES or more are parsed on a
 * worker thread (server/json-worker.ts): parsing 7 MB of JSON takes tens of ms of CPU, during which /health and
 * running streams would wait. The bytes of a big body go to the worker as they arrive, one socket chunk (64 KiB or
 * so) per message, so the main thread never joins or decodes the whole body in one go; it only receives the parsed
 * value (a structured clone, a copy rather than a parse). The body limit (--max-body-bytes) and a Content-Length
 * that does not match the body are checked as fastify's own reader does, with its errors; bad JSON is fastify's
 * invalid-JSON 400 on both paths.
 */
import type { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import fastify, { type FastifyInstance } from 'fastify';
import { definePlugin } from './plugin.js';

/** Bodies of at least this many bytes are parsed off the main thread. */
export const BIG_BODY_BYTES = 1 << 20;

type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false };

/** The message kinds json-worker.ts takes: a body's next bytes, its end (parse it), or its abandonment. */
export type JsonWorkerMessage =
  | { id: number; kind: 'chunk'; bytes: Uint8Array }
  | { id: number; kind: 'end' }
  | { id: number; kind: 'drop' };

/** One worker thread, started on the first big body, unreferenced while idle. */
export class JsonParseWorker {
  private worker: Worker | null = null;
  private next = 0;
  private readonly pending = new Map<number, (r: Reply) => void>();

  /** A body whose bytes are sent as they come: push() each chunk, then end() for the parse, or drop(). */
  begin(): { push(chunk: Uint8Array): void; end(): Promise<Reply>; drop(): void } {
    const w = this.start();
    const id = this.next++;
    let closed = false;
    const send = (m: JsonWorkerMessage) => w.postMessage(m, m.kind === 'chunk' ? [m.bytes.buffer as ArrayBuffer] : []);
    const reply = new Promise<Reply>((resolve) => this.pending.set(id, resolve));
    w.ref();
    return {
      push: (bytes) => {
        // a copy of 64 KiB or so, cheap and one per event, of the chunk alone (a view sent as it is would carry its
        // whole underlying buffer), then handed over without another
        if (!closed) send({ id, kind: 'chunk', bytes: new Uint8Array(bytes) });
      },
      end: () => {
        if (!closed) send({ id, kind: 'end' });
        closed = true;
        return reply;
      },
      drop: () => {
        if (closed) return;
        closed = true;
        send({ id, kind: 'drop' });
        this.settle({ id, ok: false });
      },
    };
  }

  /** Parses a whole body on the worker (what begin/push/end do for one chunk). */
  parse(body: Uint8Array): Promise<Reply> {
    const b = this.begin();
    b.push(body);
    return b.end();
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }

  private settle(r: Reply): void {
    const p = this.pending.get(r.id);
    this.pending.delete(r.id);
    if (this.pending.size === 0) this.worker?.unref();
    p?.(r);
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./json-worker.js', import.meta.url));
    w.unref();
    w.on('message', (r: Reply) => this.settle(r));
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

type Done = (err: Error | null, body?: unknown) => void;

/**
 * Reads a JSON body from `payload` as fastify's own reader does (the limit on the declared and the received length,
 * the declared length matched), keeping a small body whole for `small` and streaming a big one to `worker`.
 */
function readBody(
  payload: Readable & { receivedEncodedLength?: number },
  contentLength: number,
  limit: number,
  worker: JsonParseWorker,
  small: (body: Buffer, done: Done) => void,
  done: Done,
): void {
  const { FST_ERR_CTP_BODY_TOO_LARGE, FST_ERR_CTP_INVALID_CONTENT_LENGTH, FST_ERR_CTP_INVALID_JSON_BODY } =
    fastify.errorCodes;
  if (contentLength > limit) {
    done(new FST_ERR_CTP_BODY_TOO_LARGE(), undefined);
    return;
  }
  let received = 0;
  const chunks: Buffer[] = [];
  let big: ReturnType<JsonParseWorker['begin']> | null = null;
  const stop = () => {
    payload.removeListener('data', onData);
    payload.removeListener('end', onEnd);
    payload.removeListener('error', onEnd);
  };
  function onData(chunk: Buffer | string): void {
    const c = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    received += c.length;
    if (received > limit || (payload.receivedEncodedLength ?? 0) > limit) {
      stop();
      big?.drop();
      done(new FST_ERR_CTP_BODY_TOO_LARGE(), undefined);
      return;
    }
    if (big) big.push(c);
    else {
      chunks.push(c);
      if (received >= BIG_BODY_BYTES) {
        big = worker.begin();
        for (const x of chunks) big.push(x);
        chunks.length = 0;
      }
    }
  }
  function onEnd(err?: Error & { statusCode?: number }): void {
    stop();
    if (err) {
      big?.drop();
      if (!(typeof err.statusCode === 'number' && err.statusCode >= 400)) err.statusCode = 400;
      done(err, undefined);
      return;
    }
    if (!Number.isNaN(contentLength) && (payload.receivedEncodedLength || received) !== contentLength) {
      big?.drop();
      done(new FST_ERR_CTP_INVALID_CONTENT_LENGTH(), undefined);
      return;
    }
    if (!big) {
      small(Buffer.concat(chunks, received), done);
      return;
    }
    big.end().then((r) => (r.ok ? done(null, r.value) : done(new FST_ERR_CTP_INVALID_JSON_BODY(), undefined)));
  }
  payload.on('data', onData);
  payload.on('end', onEnd);
  payload.on('error', onEnd);
  payload.resume();
}

async function bodyPlugin(app: FastifyInstance): Promise<void> {
  const small = app.getDefaultJsonParser('error', 'ignore');
  const worker = new JsonParseWorker();
  app.addHook('onClose', () => worker.close());
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', (req, payload, done) => {
    const limit = req.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit ?? 1 << 20;
    readBody(
      payload as Readable,
      Number(req.headers['content-length']),
      limit,
      worker,
      // secure-json-parse takes a Buffer as well
      (buf, d) => small(req, buf as unknown as string, d),
      done as Done,
    );
  });
}

export default definePlugin(bodyPlugin, { name: 'sift-body' });
