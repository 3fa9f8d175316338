/** GET /metrics: Prometheus text exposition of the app's registry. Open (no key). */
import type { FastifyInstance } from 'fastify';
import '../context.js';
import { definePlugin } from '../plugin.js';

async function metricsRoute(app: FastifyInstance): Promise<void> {
  app.get('/metrics', async (_request, reply) => {
    const { metrics } = app.sift;
    const body = await metrics.text();
    return reply.type(metrics.contentType).send(body);
  });
}

export default definePlugin(metricsRoute, {
  name: 'sift-route-metrics',
  dependencies: ['sift-context'],
  encapsulate: true,
});
