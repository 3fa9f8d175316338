/**
 * Optional API keys: with keys configured, every route except /health, /metrics, the chat page (/) and CORS
 * preflights needs
 * `Authorization: Bearer <key>`; otherwise 401 in OpenAI's shape (code invalid_api_key). Keys are compared as
 * SHA-256 digests in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { SiftError } from '../config/errors.js';
import { definePlugin } from './plugin.js';

const OPEN_ROUTES = new Set(['/health', '/metrics', '/']);

const digest = (s: string) => createHash('sha256').update(s).digest();

async function authPlugin(app: FastifyInstance, opts: { apiKeys?: readonly string[] }): Promise<void> {
  const keys = (opts.apiKeys ?? []).map(digest);
  if (!keys.length) return;
  app.addHook('onRequest', async (request) => {
    // CORS preflights carry no credentials by design (server/cors.ts answers them)
    if (request.method === 'OPTIONS' || OPEN_ROUTES.has(request.url.split('?')[0])) return;
    const h = request.headers.authorization;
    const m = typeof h === 'string' ? /^Bearer\s+(.+)$/i.exec(h.trim()) : null;
    if (!m) throw new SiftError('UNAUTHORIZED', 'missing API key: send "Authorization: Bearer <key>"');
    const d = digest(m[1]);
    let ok = false;
    for (const k of keys) ok = timingSafeEqual(k, d) || ok;
    if (!ok) throw new SiftError('UNAUTHORIZED', 'invalid API key');
  });
}

export default definePlugin(authPlugin, { name: 'sift-auth', dependencies: ['sift-errors'] });
