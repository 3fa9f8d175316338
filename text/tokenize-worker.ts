/**
 * Worker-thread entry of TokenizeWorker (text/worker-pool.ts): loads the model directory's text side once and
 * answers encode requests, so that big inputs are rendered and tokenized off the main thread. Ids go back as an
 * Int32Array whose buffer is transferred (no copy); failures go back as {code, message, param}. Runs at background
 * priority (util/thread-priority.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { isSiftError } from '../config/errors.js';
import { lowerThreadPriority } from '../util/thread-priority.js';
import { loadText } from './text.js';
import type { WorkerReply, WorkerRequest } from './worker-pool.js';

const port = parentPort;
if (!port) throw new Error('tokenize-worker must run as a worker thread');
lowerThreadPriority(); // bulk work: the main thread (/health, running streams) runs first when cores are short
const text = loadText((workerData as { dir: string }).dir, { worker: false });

port.on('message', async (m: WorkerRequest) => {
  let reply: WorkerReply;
  try {
    const ids =
      m.kind === 'prompt'
        ? await text.encodePrompt(m.text, m.limit)
        : await text.encodeChat(m.messages, m.limit, m.opts);
    const out = Int32Array.from(ids);
    reply = { id: m.id, ok: true, ids: out };
    port.postMessage(reply, [out.buffer]);
    return;
  } catch (e) {
    reply = isSiftError(e)
      ? { id: m.id, ok: false, code: e.code, message: e.message, param: e.param }
      : { id: m.id, ok: false, code: 'INTERNAL', message: e instanceof Error ? e.message : String(e), param: null };
  }
  port.postMessage(reply);
});
