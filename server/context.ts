/** What routes reach through `app.sift` (decorated by app.ts's context plugin). */
import type { ServerConfig } from '../config/server.js';
import type { EngineState } from './engine-state.js';
import type { ServerMetrics } from './metrics.js';
import type { AttentionMode } from './plan.js';

export interface SiftContext {
  state: EngineState;
  metrics: ServerMetrics;
  config: ServerConfig;
  /** The engine's attention mode for requests that do not choose one (the attention config's `mode`). */
  attentionMode: AttentionMode;
}

declare module 'fastify' {
  interface FastifyInstance {
    sift: SiftContext;
  }
}
