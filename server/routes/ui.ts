/**
 * GET /: the chat page (server/ui/chat-page.ts), open without an API key (the page asks for one and sends it with
 * its API calls). Strict CSP: the page loads nothing from elsewhere and talks only to this server.
 */
import type { FastifyInstance } from 'fastify';
import { definePlugin } from '../plugin.js';
import { CHAT_PAGE } from '../ui/chat-page.js';

async function uiRoute(app: FastifyInstance): Promise<void> {
  app.get('/', async (_request, reply) => {
    reply
      .type('text/html; charset=utf-8')
      .header(
        'content-security-policy',
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'",
      )
      .header('x-content-type-options', 'nosniff');
    return CHAT_PAGE;
  });
}

export default definePlugin(uiRoute, { name: 'sift-route-ui', dependencies: ['sift-errors'], encapsulate: true });
