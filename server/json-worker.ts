/**
 * Worker-thread entry of the big-body JSON parser (server/body.ts): collects a body's chunks as they arrive, then
 * decodes it as UTF-8 (a leading BOM dropped), parses it and refuses `__proto__` keys as fastify's own parser does;
 * replies {id, ok, value} or {id, ok: false}.
 */
import { parentPort } from 'node:worker_threads';
import type { JsonWorkerMessage } from './body.js';

const port = parentPort;
if (!port) throw new Error('json-worker must run as a worker thread');
const decoder = new TextDecoder();
const bodies = new Map<number, Uint8Array[]>();

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
  if (m.kind === 'chunk') {
    let parts = bodies.get(m.id);
    if (!parts) bodies.set(m.id, (parts = []));
    parts.push(m.bytes);
    return;
  }
  const parts = bodies.get(m.id) ?? [];
  bodies.delete(m.id);
  if (m.kind === 'drop') return;
  try {
    let text = decoder.decode(Buffer.concat(parts));
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    const value: unknown = JSON.parse(text);
    if (text.includes('"__proto__"') && poisoned(value)) throw new Error('__proto__ key');
    port.postMessage({ id: m.id, ok: true, value });
  } catch {
    port.postMessage({ id: m.id, ok: false });
  }
});
