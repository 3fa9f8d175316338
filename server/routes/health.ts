/**
 * GET /health: 200 once the model is loaded; 503 while it loads, during shutdown, or after a GPU fault. Open (no
 * key). A 503 here is an expected state that load balancers poll for: it is answered without going through the
 * error handler's logging (no error line, no stack per poll).
 */
import type { FastifyInstance } from 'fastify';
import '../context.js';
import { mapError } from '../errors.js';
import { definePlugin } from '../plugin.js';

async function healthRoute(app: FastifyInstance): Promise<void> {
  app.get('/health', async (request, reply) => {
    let modelName: string;
    try {
      modelName = app.sift.state.require().modelName;
    } catch (err) {
      const m = mapError(err);
      request.log.debug({ status: m.status, code: m.body.error.code }, 'health: not ready');
      return reply.code(m.status).type('application/json').send(m.body);
    }
    return { status: 'ok', model: modelName };
  });
}

export default definePlugin(healthRoute, {
  name: 'sift-route-health',
  dependencies: ['sift-errors', 'sift-context'],
  encapsulate: true,
});
