/**
 * JSON request bodies. Small ones go through fastify's own parser; bodies of BIG_BODY_BYTES or more are parsed on a
 * worker thread (server/json-worker.ts): parsing 7 MB of JSON takes tens of ms of CPU, during which /health and
 * running streams would wait. The bytes of a big body go to the worker as they arrive (through shared slabs, a
 * megabyte at a time), so the main thread never joins or decodes the whole body in one go; it receives the parsed
 * value (a structured clone, a copy rather than a parse). On a generation route the worker also judges the
 * prompts (server/prompt-check.ts): one that cannot fit stays on the worker, and the main thread gets a stand-in
 * body with the refusal (`request.promptRefusal`) instead of a copy of megabytes it would only refuse. The body
 * limit (--max-body-bytes) and a Content-Length that does not match the body are checked as fastify's own reader
 * does, with its errors; bad JSON is fastify's invalid-JSON 400 on both paths.
 */
import type { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { definePlugin } from './plugin.js';
import type { PromptCheck, PromptRefusal } from './prompt-check.js';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * Set when the parse worker found a big body's prompt too long (server/prompt-check.ts): the body's prompt
     * texts are then empty stand-ins, and the route throws this refusal where its length check would.
     */
    promptRefusal: PromptRefusal | null;
  }
}

/** Bodies of at least this many bytes are parsed off the main thread. */
export const BIG_BODY_BYTES = 1 << 20;

/** A big body's bytes cross to the worker through shared slabs of this many bytes. */
export const SLAB_BYTES = 1 << 20;

/** Free slabs kept for the next bodies (16 MiB at most; more are let go). */
const SPARE_SLABS = 16;

/** What json-worker.ts answers: the parsed value (a stand-in when `refusal` is set), or bad JSON. */
export type JsonWorkerReply =
  | { id: number; ok: true; value: unknown; refusal?: PromptRefusal }
  | { id: number; ok: false };
type Reply = JsonWorkerReply;

/** What json-worker.ts sends: a reply, or a slab it has decoded (free for reuse). */
export type JsonWorkerOutput = JsonWorkerReply | { released: SharedArrayBuffer };

/**
 * The message kinds json-worker.ts takes: a body's next bytes (the first `length` bytes of a slab, which it decodes
 * and releases), its end (parse it, and judge its prompts against `check` when one is given), or its
 * abandonment.
 */
export type JsonWorkerMessage =
  | { id: number; kind: 'chunk'; slab: SharedArrayBuffer; length: number }
  | { id: number; kind: 'end'; check: PromptCheck | null }
  | { id: number; kind: 'drop' };

/**
 * One worker thread, started on the first big body, unreferenced while idle. A body's bytes are copied into shared
 * slabs (SLAB_BYTES) that the worker decodes and releases for reuse: per megabyte, one message each way and a copy
 * into memory already in use. A fresh buffer and a message per socket chunk (64 KiB) cost the main thread
 * several times more: page faults on new memory, garbage collection, 16 times the messages.
 */
export class JsonParseWorker {
  private worker: Worker | null = null;
  private next = 0;
  private readonly pending = new Map<number, (r: Reply) => void>();
  private readonly spare: SharedArrayBuffer[] = [];

  /**
   * A body whose bytes are sent as they come: push() each chunk, then end() for the parse (its prompts judged
   * against `check`, if given), or drop().
   */
  begin(): { push(chunk: Uint8Array): void; end(check?: PromptCheck | null): Promise<Reply>; drop(): void } {
    const w = this.start();
    const id = this.next++;
    let closed = false;
    const reply = new Promise<Reply>((resolve) => this.pending.set(id, resolve));
    let slab: Uint8Array | null = null; // the slab being filled
    let used = 0;
    const flush = () => {
      if (slab === null) return;
      if (used > 0) w.postMessage({ id, kind: 'chunk', slab: slab.buffer as SharedArrayBuffer, length: used });
      else this.release(slab.buffer as SharedArrayBuffer);
      slab = null;
      used = 0;
    };
    w.ref();
    return {
      push: (bytes) => {
        if (closed) return;
        for (let at = 0; at < bytes.length; ) {
          slab ??= new Uint8Array(this.spare.pop() ?? new SharedArrayBuffer(SLAB_BYTES));
          const n = Math.min(bytes.length - at, SLAB_BYTES - used);
          slab.set(n === bytes.length ? bytes : bytes.subarray(at, at + n), used);
          used += n;
          at += n;
          if (used === SLAB_BYTES) flush();
        }
      },
      end: (check = null) => {
        if (!closed) {
          flush();
          w.postMessage({ id, kind: 'end', check } satisfies JsonWorkerMessage);
        }
        closed = true;
        return reply;
      },
      drop: () => {
        if (closed) return;
        closed = true;
        used = 0;
        flush();
        w.postMessage({ id, kind: 'drop' } satisfies JsonWorkerMessage);
        this.settle({ id, ok: false });
      },
    };
  }

  /** Parses a whole body on the worker (what begin/push/end do for one chunk). */
  parse(body: Uint8Array, check: PromptCheck | null = null): Promise<Reply> {
    const b = this.begin();
    b.push(body);
    return b.end(check);
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }

  private release(slab: SharedArrayBuffer): void {
    if (this.spare.length < SPARE_SLABS) this.spare.push(slab);
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
    w.on('message', (m: JsonWorkerOutput) => ('released' in m ? this.release(m.released) : this.settle(m)));
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

/** How readBody reaches the rest: the small-body parser, the parse worker and what it judges prompts against. */
interface BodyReader {
  worker: JsonParseWorker;
  small: (body: Buffer, done: Done) => void;
  /** The prompt check for this request (asked once its body is complete), or null. */
  check: () => PromptCheck | null;
  /** Takes the worker's refusal of the prompts (before `done` gets the stand-in). */
  refused: (r: PromptRefusal) => void;
}

/**
 * Reads a JSON body from `payload` as fastify's own reader does (the limit on the declared and the received length,
 * the declared length matched), keeping a small body whole for `small` and streaming a big one to `worker`.
 */
function readBody(
  payload: Readable & { receivedEncodedLength?: number },
  contentLength: number,
  limit: number,
  reader: BodyReader,
  done: Done,
): void {
  const { worker, small } = reader;
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
    if (!big) {
      chunks.push(c);
      if (received < BIG_BODY_BYTES) return;
      big = worker.begin();
      for (const x of chunks) big.push(x);
      chunks.length = 0;
    } else big.push(c);
    // One socket read per turn of the event loop: libuv reads up to 32 times (2 MiB) from a busy socket before it
    // looks at anything else, tens of ms of handing bytes over during which /health and running streams wait.
    payload.pause();
    setImmediate(resume);
  }
  const resume = () => payload.resume();
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
    big.end(reader.check()).then((r) => {
      if (!r.ok) return done(new FST_ERR_CTP_INVALID_JSON_BODY(), undefined);
      if (r.refusal) reader.refused(r.refusal);
      done(null, r.value);
    });
  }
  payload.on('data', onData);
  payload.on('end', onEnd);
  payload.on('error', onEnd);
  payload.resume();
}

export interface BodyOptions extends Record<string, unknown> {
  /** What a big body's prompts are judged against on the parse worker, per request; null (default): nothing. */
  promptCheck?: (request: FastifyRequest) => PromptCheck | null;
}

async function bodyPlugin(app: FastifyInstance, opts: BodyOptions): Promise<void> {
  const small = app.getDefaultJsonParser('error', 'ignore');
  const worker = new JsonParseWorker();
  const promptCheck = opts.promptCheck ?? (() => null);
  app.addHook('onClose', () => worker.close());
  app.decorateRequest('promptRefusal', null);
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', (req, payload, done) => {
    const limit = req.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit ?? 1 << 20;
    readBody(
      payload as Readable,
      Number(req.headers['content-length']),
      limit,
      {
        worker,
        // secure-json-parse takes a Buffer as well
        small: (buf, d) => small(req, buf as unknown as string, d),
        check: () => promptCheck(req),
        refused: (r) => {
          req.promptRefusal = r;
        },
      },
      done as Done,
    );
  });
}

export default definePlugin(bodyPlugin, { name: 'sift-body' });
