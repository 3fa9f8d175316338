/** GET /v1/models: the one served model; GET /v1/models/{id}: its card (the SDK's models.retrieve), else 404. */
import type { FastifyInstance } from 'fastify';
import '../context.js';
import { SiftError } from '../../config/errors.js';
import { definePlugin } from '../plugin.js';
import type { ModelCard, ModelList } from '../protocol.js';

async function modelsRoute(app: FastifyInstance): Promise<void> {
  const created = Math.floor(Date.now() / 1000);
  const card = (): ModelCard => {
    const { engine, modelName } = app.sift.state.require();
    const settings = app.sift.state.settings;
    return {
      id: modelName,
      object: 'model',
      created,
      owned_by: 'sift',
      max_model_len: engine.maxContext,
      ...(settings ? { sift: settings } : {}),
    };
  };
  app.get('/v1/models', async (): Promise<ModelList> => ({ object: 'list', data: [card()] }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request): Promise<ModelCard> => {
    const c = card();
    if (request.params.id !== c.id) {
      throw new SiftError(
        'MODEL_NOT_FOUND',
        `the model "${request.params.id}" does not exist; this server serves "${c.id}"`,
        {
          param: 'model',
        },
      );
    }
    return c;
  });
}

export default definePlugin(modelsRoute, {
  name: 'sift-route-models',
  dependencies: ['sift-errors', 'sift-context'],
  encapsulate: true,
});
