/**
 * `sift serve`: the OpenAI-compatible HTTP/SSE server. It listens first, so GET /health answers 503 while the
 * model is fetched (on first use), uploaded and wrapped in the engine core, and 200 from then on.
 */
import path from 'node:path';
import { pino } from 'pino';
import { loadModelConfig } from '../checkpoint/config.js';
import { knownModel } from '../checkpoint/models.js';
import { resolveModel } from '../checkpoint/pull.js';
import { SiftError } from '../config/errors.js';
import { describeSection, toFlagName } from '../config/schema.js';
import { replicaIdOf, SERVER_SPEC, type ServerConfig, serverConfig } from '../config/server.js';
import { EngineCore } from '../engine/core.js';
import { ModelRunner } from '../model/runner.js';
import { buildApp } from '../server/app.js';
import { listen, onSignals } from '../server/server.js';
import { loadText } from '../text/text.js';
import {
  attentionConfigFrom,
  engineConfigFrom,
  engineHelp,
  engineOptionDefs,
  parse,
  readConfigFile,
} from './common.js';

const HELP = `usage: sift serve [--model NAME|DIR] [--host H] [--port P] [--api-key K ...] [--config FILE] [engine options]

Serves the OpenAI API (POST /v1/chat/completions, POST /v1/completions, GET /v1/models) plus GET /health and
GET /metrics. /health answers 503 until the model is loaded.

  --api-key K            accept "Authorization: Bearer K" (repeatable; also --api-keys K1,K2 or SIFT_SERVER_API_KEYS)
  --max-context N        context limit in tokens; above the model's trained length it is allowed with a warning

server options (also in a --config JSON file under "server", or env):
${describeSection('SERVER', SERVER_SPEC).join('\n')}
`;

/** Server config from defaults < config file < SIFT_SERVER_* env < flags (repeated --api-key joins the list). */
export function serverConfigFrom(values: Record<string, unknown>): ServerConfig {
  const file = readConfigFile(values.config as string | undefined);
  const flags: Record<string, unknown> = {};
  for (const k of Object.keys(SERVER_SPEC)) flags[k] = values[toFlagName(k)];
  const keys = values['api-key'] as string[] | undefined;
  if (keys?.length) flags.apiKeys = [...keys, ...(flags.apiKeys ? [String(flags.apiKeys)] : [])].join(',');
  return serverConfig({ file: file.server as Record<string, unknown> | undefined, env: process.env, flags });
}

/** The name clients pass as `model`: --served-model-name, else a known model's name, else the directory's name. */
export function servedName(cfg: ServerConfig): string {
  if (cfg.servedModelName) return cfg.servedModelName;
  if (knownModel(cfg.model)) return cfg.model;
  return path.basename(path.resolve(cfg.model));
}

export async function main(argv: string[]): Promise<number> {
  const defs = engineOptionDefs();
  for (const k of Object.keys(SERVER_SPEC)) defs[toFlagName(k)] = { type: 'string' };
  defs['api-key'] = { type: 'string', multiple: true };
  const { values, positionals } = parse(argv, defs);
  if (values.help) {
    process.stdout.write(`${HELP}\n${engineHelp()}\n`);
    return 0;
  }
  if (positionals.length)
    throw new SiftError('INVALID_ARGUMENT', `unexpected argument "${positionals[0]}" (see sift serve --help)`);
  const cfg = serverConfigFrom(values);
  const engineCfg = engineConfigFrom(values);
  const attention = attentionConfigFrom(values, engineCfg.pageSize);
  const log = pino({ level: cfg.logLevel, base: { pid: process.pid } });
  const modelName = servedName(cfg);

  const app = await buildApp({
    engine: null,
    text: null,
    config: cfg,
    logger: log,
    modelName,
    attentionMode: attention.mode as 'dense' | 'sparse',
  });
  let loop: EngineCore | null = null;
  onSignals(app, { engine: () => loop, graceMs: cfg.shutdownGraceMs });
  const { url } = await listen(app, { host: cfg.host, port: cfg.port });
  log.info(
    { url, model: modelName, replica: replicaIdOf(cfg), auth: cfg.apiKeys !== '' },
    `listening on ${url}; loading ${cfg.model}`,
  );

  try {
    const t0 = performance.now();
    let lastPull = 0;
    const dir = await resolveModel(cfg.model, {
      autoPull: true,
      onProgress: (p) => {
        if (p.phase === 'download' && performance.now() - lastPull < 2000) return;
        lastPull = performance.now();
        log.info({ phase: p.phase }, p.message);
      },
    });
    const text = loadText(dir);
    const trained = loadModelConfig(dir).maxPositionEmbeddings;
    if (engineCfg.maxContext !== null && engineCfg.maxContext > trained) {
      log.warn(
        { maxContext: engineCfg.maxContext, trained },
        `--max-context ${engineCfg.maxContext} exceeds the model's trained context (${trained}); quality past it is not guaranteed`,
      );
    }
    let lastUpload = 0;
    const engine = await ModelRunner.load(dir, engineCfg, {
      attention,
      onProgress: (p) => {
        if (performance.now() - lastUpload < 2000 && p.tensorsDone < p.tensorsTotal) return;
        lastUpload = performance.now();
        log.info(
          { tensors: `${p.tensorsDone}/${p.tensorsTotal}`, mib: Math.round(p.bytesDone / 2 ** 20) },
          'uploading weights',
        );
      },
    });
    loop = EngineCore.create(engine, { modelName, maxWaiting: cfg.maxWaiting > 0 ? cfg.maxWaiting : 1 << 30 });
    app.sift.state.ready(loop, text);
    log.info(
      {
        model: modelName,
        dir,
        maxContext: loop.maxContext,
        adapter: engine.gpu.caps.adapterName,
        loadMs: Math.round(performance.now() - t0),
      },
      'model ready',
    );
  } catch (err) {
    log.fatal({ err }, 'could not load the model');
    await app.close();
    throw err;
  }
  // The server now runs until a signal; onSignals exits the process.
  return new Promise<number>(() => {});
}
