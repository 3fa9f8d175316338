/**
 * CORS for browser clients (@fastify/cors), off unless --allowed-origins lists origins: "*" allows any origin,
 * else only the listed ones (exact match, e.g. "http://localhost:5173"). Preflights are answered before
 * authentication; x-request-id is exposed to the page.
 */
import cors from '@fastify/cors';
import type { FastifyInstance } from 'fastify';
import { definePlugin } from './plugin.js';

async function corsPlugin(app: FastifyInstance, opts: { origins: readonly string[] }): Promise<void> {
  if (opts.origins.length === 0) return;
  const any = opts.origins.includes('*');
  await app.register(cors, {
    origin: any ? true : [...opts.origins],
    methods: ['GET', 'POST', 'OPTIONS'],
    exposedHeaders: ['x-request-id'],
    maxAge: 600,
  });
}

export default definePlugin(corsPlugin, { name: 'sift-cors' });
