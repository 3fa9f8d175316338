/** GET /v1/models: the one served model. */
import type { FastifyInstance } from 'fastify';
import '../context.js';
import { definePlugin } from '../plugin.js';
import type { ModelList } from '../protocol.js';

async function modelsRoute(app: FastifyInstance): Promise<void> {
  const created = Math.floor(Date.now() / 1000);
  app.get('/v1/models', async (): Promise<ModelList> => {
    const { engine, modelName } = app.sift.state.require();
    const settings = app.sift.state.settings;
    return {
      object: 'list',
      data: [
        {
          id: modelName,
          object: 'model',
          created,
          owned_by: 'sift',
          max_model_len: engine.maxContext,
          ...(settings ? { sift: settings } : {}),
        },
      ],
    };
  });
}

export default definePlugin(modelsRoute, {
  name: 'sift-route-models',
  dependencies: ['sift-errors', 'sift-context'],
  encapsulate: true,
});
