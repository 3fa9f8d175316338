/**
 * Worker-thread entry of the big-body JSON parser (server/body.ts): decodes a UTF-8 body (a leading BOM dropped),
 * parses it and refuses `__proto__` keys as fastify's own parser does; replies {id, ok, value} or {id, ok: false}.
 */
import { parentPort } from 'node:worker_threads';

const port = parentPort;
if (!port) throw new Error('json-worker must run as a worker thread');
const decoder = new TextDecoder();

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

port.on('message', (m: { id: number; body: ArrayBuffer }) => {
  try {
    let text = decoder.decode(m.body);
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    const value: unknown = JSON.parse(text);
    if (text.includes('"__proto__"') && poisoned(value)) throw new Error('__proto__ key');
    port.postMessage({ id: m.id, ok: true, value });
  } catch {
    port.postMessage({ id: m.id, ok: false });
  }
});
