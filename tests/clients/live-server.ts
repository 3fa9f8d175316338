/**
 * A live sift for the real-client tests: the real default model (stories15M) on the engine core, served on a
 * loopback port with an API key, as `sift serve` would.
 */
import type { FastifyInstance } from 'fastify';
import { engineConfig } from '../../config/engine.js';
import { EngineCore } from '../../engine/core.js';
import { ModelRunner } from '../../model/runner.js';
import { buildApp } from '../../server/app.js';
import { listen } from '../../server/server.js';
import { loadText } from '../../text/text.js';
import { storiesDir } from '../helpers/stories.js';
import { cfg } from '../server/helpers.js';

export const MODEL = 'stories15M';
export const KEY = 'sk-clients-test';

export interface LiveSift {
  url: string;
  app: FastifyInstance;
  engine: EngineCore;
  close(): Promise<void>;
}

export async function liveSift(): Promise<LiveSift> {
  const dir = await storiesDir();
  const engine = EngineCore.create(await ModelRunner.load(dir, engineConfig()), { modelName: MODEL });
  const app = await buildApp({ engine, text: loadText(dir), config: cfg({ apiKeys: KEY }), modelName: MODEL });
  const { url } = await listen(app, { host: '127.0.0.1', port: 0 });
  return {
    url,
    app,
    engine,
    close: async () => {
      await app.close();
      await engine.shutdown(0);
    },
  };
}
