/** What routes reach through `app.sift` (decorated by app.ts's context plugin). */
import type { ServerConfig } from '../config/server.js';
import type { EngineState } from './engine-state.js';
import type { ServerMetrics } from './metrics.js';

export interface SiftContext {
  state: EngineState;
  metrics: ServerMetrics;
  config: ServerConfig;
}

declare module 'fastify' {
  interface FastifyInstance {
    sift: SiftContext;
  }
}
