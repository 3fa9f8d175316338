/** GET /health: 200 once the model is loaded; 503 while it loads or after the GPU device was lost. Open (no key). */
import type { FastifyInstance } from 'fastify';
import '../context.js';
import { definePlugin } from '../plugin.js';

async function healthRoute(app: FastifyInstance): Promise<void> {
  app.get('/health', async () => {
    const { modelName } = app.sift.state.require();
    return { status: 'ok', model: modelName };
  });
}

export default definePlugin(healthRoute, {
  name: 'sift-route-health',
  dependencies: ['sift-errors', 'sift-context'],
  encapsulate: true,
});
