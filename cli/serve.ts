/**
 * `sift serve`: the OpenAI-compatible HTTP/SSE server. It listens first, so GET /health answers 503 while the
 * model is fetched (on first use), uploaded and wrapped in the engine core, and 200 from then on.
 */

import path from 'node:path';
import { pino } from 'pino';
import { loadModelConfig } from '../checkpoint/config.js';
import { knownModel } from '../checkpoint/models.js';
import { resolveModel } from '../checkpoint/pull.js';
import type { AttentionConfig } from '../config/attention.js';
import { isSiftError, SiftError } from '../config/errors.js';
import { describeSection, flagOf } from '../config/schema.js';
import { replicaIdOf, SERVER_SPEC, type ServerConfig, serverConfig } from '../config/server.js';
import { EngineCore } from '../engine/core.js';
import { chunkLine } from '../model/chunk-size.js';
import { loadHeadPlan } from '../model/head-plan.js';
import { ModelRunner } from '../model/runner.js';
import { buildApp } from '../server/app.js';
import { exitAfterFault, listen, onSignals } from '../server/server.js';
import { Gpu } from '../shaders/runtime.js';
import {
  attentionConfigFrom,
  engineConfigFrom,
  engineHelp,
  engineOptionDefs,
  flagValues,
  parse,
  readConfigFile,
} from './common.js';
import { loadModelText } from './model-text.js';

const HELP = `usage: sift serve [--model NAME|DIR] [--host H] [--port P] [--api-key K ...] [--config FILE] [engine options]

Serves the OpenAI API (POST /v1/chat/completions, POST /v1/completions, GET /v1/models) plus GET /health and
GET /metrics. /health answers 503 until the model is loaded.

  --api-key K              accept "Authorization: Bearer K" (repeatable; also --api-keys K1,K2 or SIFT_SERVER_API_KEYS)

server options (also in a --config JSON file under "server", or env):
${describeSection('SERVER', SERVER_SPEC).join('\n')}
`;

/** Server config from defaults < config file < SIFT_SERVER_* env < flags (repeated --api-key joins the list). */
export function serverConfigFrom(values: Record<string, unknown>): ServerConfig {
  const { sections, fileName } = readConfigFile(values.config as string | undefined);
  const flags = flagValues(SERVER_SPEC, values);
  const keys = values['api-key'] as string[] | undefined;
  if (keys?.length) flags.apiKeys = [...keys, ...(flags.apiKeys ? [String(flags.apiKeys)] : [])].join(',');
  return serverConfig({ file: sections.server, fileName, env: process.env, flags });
}

/** The name clients pass as `model`: --served-model-name, else a known model's name, else the directory's name. */
export function servedName(cfg: ServerConfig): string {
  if (cfg.servedModelName) return cfg.servedModelName;
  if (knownModel(cfg.model)) return cfg.model;
  return path.basename(path.resolve(cfg.model));
}

/** Why the server could not listen, in one line that says what to do (unknown failures pass through). */
export function listenError(e: unknown, cfg: Pick<ServerConfig, 'host' | 'port'>): unknown {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  const at = `${cfg.host}:${cfg.port}`;
  const fail = (msg: string) => new SiftError('LISTEN_FAILED', msg, { cause: e });
  switch (code) {
    case 'EADDRINUSE':
      return fail(
        `port ${cfg.port} on ${cfg.host} is already in use: stop what listens there, or pass --port N (--port 0 picks a free port)`,
      );
    case 'EACCES':
      return fail(
        `no permission to listen on ${at}: ports below 1024 need privileges; pass --port 8000 or another port >= 1024`,
      );
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
      return fail(
        `--host "${cfg.host}" does not resolve to an address: pass an IP address of this machine (127.0.0.1, or 0.0.0.0 for every interface) or a resolvable name`,
      );
    case 'EADDRNOTAVAIL':
      return fail(
        `--host "${cfg.host}" is not an address of this machine: pass one of its addresses (127.0.0.1, or 0.0.0.0 for every interface)`,
      );
    default:
      return e;
  }
}

/**
 * What needs no model weights is checked before listening, so a mistake fails at once in one line: the model's
 * name or path (a known model that is not pulled yet is fetched after listening), and a head pattern against the
 * model's shape.
 */
async function preflight(cfg: ServerConfig, attention: AttentionConfig): Promise<void> {
  let dir: string;
  try {
    dir = await resolveModel(cfg.model, { autoPull: false });
  } catch (e) {
    if (isSiftError(e, 'MODEL_NOT_FOUND') && knownModel(cfg.model)) return; // pulled after listening
    throw e;
  }
  if (attention.headPattern) {
    loadHeadPlan(attention.headPattern, loadModelConfig(dir), {
      streamingFraction: attention.streamingFraction ?? undefined,
    });
  }
}

/**
 * What `sift serve` says at startup when the KV cache cannot hold one full-context sequence (null when it can):
 * the most tokens a request may then have, and the --kv-cache-mib that would hold the whole context. Requests
 * beyond the cache are refused with a 400 (engine/client.ts checkRequest), never cut short.
 */
export function kvCapacityNotice(loop: EngineCore, kvCacheMib: number): string | null {
  if (loop.kvCacheTokens >= loop.maxContext) return null;
  const { pageSize, bytesPerPage } = loop.kv.config;
  const fix =
    bytesPerPage === null
      ? ''
      : ` --kv-cache-mib ${Math.ceil((Math.ceil(loop.maxContext / pageSize) * bytesPerPage) / 2 ** 20)} holds the whole context.`;
  return (
    `the KV cache (--kv-cache-mib ${kvCacheMib}) holds ${loop.kvCacheTokens} tokens, less than one full-context ` +
    `sequence of ${loop.maxContext}: requests may have at most ${loop.kvCacheTokens} tokens (prompt + max_tokens; ` +
    `more is a 400).${fix}`
  );
}

export async function main(argv: string[]): Promise<number> {
  const defs = engineOptionDefs();
  for (const [k, f] of Object.entries(SERVER_SPEC)) defs[flagOf(k, f)] = { type: 'string' };
  defs['api-key'] = { type: 'string', multiple: true };
  const { values } = parse(argv, defs, 'serve');
  if (values.help) {
    process.stdout.write(`${HELP}\n${engineHelp()}\n`);
    return 0;
  }
  const cfg = serverConfigFrom(values);
  const engineCfg = engineConfigFrom(values);
  const attention = attentionConfigFrom(values, engineCfg.pageSize);
  await preflight(cfg, attention);
  // The adapter is checked before anything listens: a wrong --adapter fails at once, naming the ones there are.
  const gpu = await Gpu.create({ adapter: engineCfg.adapter });
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
  let url: string;
  try {
    ({ url } = await listen(app, { host: cfg.host, port: cfg.port }));
  } catch (e) {
    await app.close();
    gpu.destroy();
    throw listenError(e, cfg);
  }
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
    const text = loadModelText(dir);
    text.warmUp();
    if (!text.chat.isModelTemplate) {
      log.warn(
        'the model has no chat template: /v1/chat/completions renders BOS + the user messages joined by newlines (system and assistant messages are dropped)',
      );
    }
    const trained = loadModelConfig(dir).maxPositionEmbeddings;
    if (engineCfg.maxContext !== null && engineCfg.maxContext > trained) {
      log.warn(
        { maxContext: engineCfg.maxContext, trained },
        `--max-context ${engineCfg.maxContext} exceeds the model's trained context (${trained}); quality past it is not guaranteed`,
      );
    }
    let lastUpload = 0;
    const engine = await ModelRunner.load(dir, engineCfg, {
      gpu,
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
    loop = EngineCore.create(engine, {
      modelName,
      maxWaiting: cfg.maxWaiting > 0 ? cfg.maxWaiting : 1 << 30,
      // a GPU fault: every request still running got an error; exit for the supervisor to restart us
      onDeviceFault: (err) => void exitAfterFault(app, loop, err),
    });
    const stats = loop.stats();
    app.sift.state.ready(loop, text, {
      adapter: engine.gpu.caps.adapterName,
      attention: {
        mode: attention.mode as 'dense' | 'sparse',
        token_budget: attention.tokenBudget,
        page_size: engineCfg.pageSize,
        prefill_mode: attention.prefillMode as 'dense' | 'block-sparse',
        streaming_head_share: stats.streamingHeadShare,
        sink: attention.sink,
        local: attention.local,
      },
      prefix_cache: stats.prefixCacheEnabled,
    });
    if (!stats.prefixCacheEnabled) {
      log.warn(
        { streamingHeadShare: stats.streamingHeadShare },
        'the model has streaming heads: the prefix cache is off (a cached prefix would skip writing their rings)',
      );
    }
    const chunk = engine.prefillChunk;
    if (chunk)
      log.info({ prefillChunkTokens: chunk.tokens, auto: chunk.auto }, chunkLine(chunk, engineCfg.activationMib));
    const kvNotice = kvCapacityNotice(loop, engineCfg.kvCacheMib);
    if (kvNotice) log.warn({ kvCacheTokens: loop.kvCacheTokens, maxContext: loop.maxContext }, kvNotice);
    log.info(
      {
        model: modelName,
        dir,
        maxContext: loop.maxContext,
        kvCacheTokens: loop.kvCacheTokens,
        adapter: engine.gpu.caps.adapterName,
        loadMs: Math.round(performance.now() - t0),
      },
      'model ready',
    );
  } catch (err) {
    // sift's own errors are the user's to fix and carry their remedy: log the message, not a stack
    if (err instanceof SiftError) log.fatal({ code: err.code }, `could not load the model: ${err.message}`);
    else log.fatal({ err }, 'could not load the model');
    await app.close();
    gpu.destroy();
    throw err;
  }
  // The server now runs until a signal; onSignals exits the process.
  return new Promise<number>(() => {});
}
