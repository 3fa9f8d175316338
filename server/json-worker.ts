/**
 * Worker-thread entry of the big-body JSON parser (server/body.ts): decodes a body as UTF-8 as its bytes arrive
 * (from the shared slab each comes in, which goes back at once), then, a leading BOM dropped, parses it and refuses
 * `__proto__` keys as fastify's own parser does. With a prompt check (a generation route), it judges the prompts as
 * the route would (server/prompt-check.ts): a prompt that cannot fit is answered with the refusal and a stand-in
 * body, so its megabytes stay here. Replies {id, ok, value, refusal?} or {id, ok: false}. Runs at background
 * priority (util/thread-priority.ts).
 */
import { TextDecoder } from 'node:util';
import { parentPort } from 'node:worker_threads';
import { ChatTemplate, type ChatTemplateOptions } from '../text/chat-template.js';
import { lowerThreadPriority } from '../util/thread-priority.js';
import type { JsonWorkerMessage, JsonWorkerOutput, JsonWorkerReply } from './body.js';
import { refusePrompts, withoutPrompts } from './prompt-check.js';

const port = parentPort;
if (!port) throw new Error('json-worker must run as a worker thread');
lowerThreadPriority(); // bulk work: the main thread (/health, running streams) runs first when cores are short
/** The bodies being received: each one's UTF-8 decoder (streaming: a character may span two slabs) and text so far. */
const bodies = new Map<number, { decoder: TextDecoder; pieces: string[] }>();

/** Chat templates by what they were built from (one model is served: one entry, parsed once). */
const templates = new Map<string, ChatTemplate>();
function template(opts: ChatTemplateOptions): ChatTemplate {
  const key = JSON.stringify(opts);
  let t = templates.get(key);
  if (!t) {
    if (templates.size >= 4) templates.clear();
    t = new ChatTemplate(opts);
    templates.set(key, t);
  }
  return t;
}

/** True when some object in `v` has an own `__proto__` key (prototype poisoning). */
function poisoned(v: unknown): boolean {
  const stack = [v];
  while (stack.length) {
    const x = stack.pop();
    if (x === null || typeof x !== 'object') continue;
    if (Object.hasOwn(x, '__proto__')) return true;
    for (const k in x) stack.push((x as Record<string, unknown>)[k]);
  }
  return false;
}

port.on('message', (m: JsonWorkerMessage) => {
  let body = bodies.get(m.id);
  if (m.kind === 'chunk') {
    // ignoreBOM: the BOM stays in the text, and one is dropped below, as fastify's parser does
    if (!body) bodies.set(m.id, (body = { decoder: new TextDecoder('utf-8', { ignoreBOM: true }), pieces: [] }));
    body.pieces.push(body.decoder.decode(new Uint8Array(m.slab, 0, m.length), { stream: true }));
    port.postMessage({ released: m.slab } satisfies JsonWorkerOutput); // decoded: the slab goes back for reuse
    return;
  }
  bodies.delete(m.id);
  if (m.kind === 'drop') return;
  let reply: JsonWorkerReply;
  try {
    let text = body ? body.pieces.join('') + body.decoder.decode() : '';
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    const value: unknown = JSON.parse(text);
    if (text.includes('"__proto__"') && poisoned(value)) throw new Error('__proto__ key');
    const check = m.check;
    const refusal = check ? refusePrompts(value, check, template) : null;
    reply =
      check && refusal
        ? { id: m.id, ok: true, value: withoutPrompts(value as Record<string, unknown>, check.kind), refusal }
        : { id: m.id, ok: true, value };
  } catch {
    reply = { id: m.id, ok: false };
  }
  port.postMessage(reply);
});
