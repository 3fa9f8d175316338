/**
 * The server under load: what it says about itself (GET /health, GET /v1/models, its Server header), and, when
 * no --url is given, a `sift serve` started for the run on a free port and stopped after it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SiftError } from '../config/errors.js';

export interface TargetInfo {
  baseUrl: string;
  model: string;
  /** Every model id GET /v1/models listed. */
  models: string[];
  /** 'sift' when the server is sift (it said so, or this run started it); else owned_by or Server header. */
  serverKind: string;
  isSift: boolean;
  serverHeader: string | null;
  /** Context limit in tokens when the server tells it (max_model_len, context_length, ...), else null. */
  contextLength: number | null;
  /** Whether this run started the server. */
  spawned: boolean;
  /**
   * How the server says it serves the model (sift's `sift` object in GET /v1/models: adapter, attention defaults,
   * prefix cache), as it said it; null when it does not say.
   */
  settings: Record<string, unknown> | null;
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** A small GET (or POST) with a deadline; rejects on connection errors. */
export function fetchText(url: string, opts: { apiKey?: string; timeoutMs?: number } = {}): Promise<Reply> {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (opts.apiKey) headers.authorization = `Bearer ${opts.apiKey}`;
    const req = mod.request(u, { method: 'GET', headers, agent: false, timeout: opts.timeoutMs ?? 10000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => {
        text += s;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** Base URL without a trailing slash or /v1 (routes are appended as /v1/...). */
export function normalizeBaseUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new SiftError('INVALID_ARGUMENT', `--url ${url} is not a URL (e.g. http://127.0.0.1:8000)`, { param: 'url' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new SiftError('INVALID_ARGUMENT', `--url must be http:// or https:// (got ${url})`, { param: 'url' });
  }
  return u.toString().replace(/\/+$/, '').replace(/\/v1$/, '');
}

const CONTEXT_FIELDS = [
  'max_model_len',
  'context_length',
  'context_window',
  'max_context_length',
  'n_ctx',
  'max_context',
];

/** Asks the server who it is and which models it serves; picks `model` or the first listed. */
export async function probeTarget(
  baseUrl: string,
  opts: { apiKey?: string; model?: string; spawned?: boolean },
): Promise<TargetInfo> {
  let models: Reply;
  try {
    models = await fetchText(`${baseUrl}/v1/models`, { apiKey: opts.apiKey });
  } catch (e) {
    throw new SiftError('INVALID_ARGUMENT', `cannot reach ${baseUrl}/v1/models: ${(e as Error).message}`, {
      param: 'url',
    });
  }
  if (models.status !== 200) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `GET ${baseUrl}/v1/models answered HTTP ${models.status}: ${models.text.slice(0, 200)}`,
      {
        param: 'url',
      },
    );
  }
  let list: Record<string, unknown>[] = [];
  try {
    const j = JSON.parse(models.text) as { data?: unknown };
    if (Array.isArray(j.data))
      list = j.data.filter((m): m is Record<string, unknown> => typeof m === 'object' && m !== null);
  } catch {
    // handled below
  }
  const ids = list.map((m) => String(m.id));
  if (!opts.model && ids.length === 0) {
    throw new SiftError('INVALID_ARGUMENT', `GET ${baseUrl}/v1/models lists no model; name one with --model`, {
      param: 'model',
    });
  }
  const model = opts.model ?? ids[0];
  const entry = list.find((m) => m.id === model);
  let contextLength: number | null = null;
  for (const f of CONTEXT_FIELDS) {
    const v = entry?.[f];
    if (typeof v === 'number' && Number.isInteger(v) && v > 0) {
      contextLength = v;
      break;
    }
  }
  const serverHeader = typeof models.headers.server === 'string' ? models.headers.server : null;
  const ownedBy = typeof entry?.owned_by === 'string' ? entry.owned_by : null;
  const isSift = opts.spawned === true || ownedBy === 'sift' || /\bsift\b/i.test(serverHeader ?? '');
  const settings =
    typeof entry?.sift === 'object' && entry.sift !== null && !Array.isArray(entry.sift)
      ? (entry.sift as Record<string, unknown>)
      : null;
  return {
    baseUrl,
    model,
    models: ids,
    serverKind: isSift ? 'sift' : (ownedBy ?? serverHeader ?? 'unknown'),
    isSift,
    serverHeader,
    contextLength,
    spawned: opts.spawned === true,
    settings,
  };
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface SpawnedServer {
  baseUrl: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/**
 * Starts `node dist/cli/main.js serve --port P [--model NAME]` (this checkout's sift), logs its output to `logFile`, and
 * waits until GET /health answers 200 (the first start may pull and convert the default model).
 */
export async function spawnSift(opts: {
  model?: string;
  /** More `sift serve` flags, e.g. ['--max-context', '65536']. */
  args?: string[];
  logFile: string;
  readyTimeoutMs: number;
  signal?: AbortSignal;
  onWait?: (elapsedMs: number) => void;
}): Promise<SpawnedServer> {
  const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'main.js');
  const port = await freePort();
  const args = [cli, 'serve', '--host', '127.0.0.1', '--port', String(port)];
  if (opts.model) args.push('--model', opts.model);
  if (opts.args) args.push(...opts.args);
  const log = createWriteStream(opts.logFile);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  let tail = '';
  child.stderr?.on('data', (b: Buffer) => {
    tail = (tail + b.toString()).slice(-2000);
  });
  let exited: { code: number | null; signal: string | null } | null = null;
  const exitP = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve();
    }),
  );
  const baseUrl = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (exited === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15000);
      await exitP;
      clearTimeout(t);
    }
    log.end();
  };
  const t0 = Date.now();
  while (true) {
    if (exited !== null) {
      const e = exited as { code: number | null; signal: string | null };
      log.end();
      throw new SiftError(
        'NOT_READY',
        `sift serve exited (code ${e.code}, signal ${e.signal}) before it was ready:\n${tail.trim()}`,
      );
    }
    if (opts.signal?.aborted) {
      await stop();
      throw new SiftError('NOT_READY', 'interrupted while sift serve was starting');
    }
    if (Date.now() - t0 > opts.readyTimeoutMs) {
      await stop();
      throw new SiftError(
        'NOT_READY',
        `sift serve did not answer GET /health 200 within ${opts.readyTimeoutMs / 1000} s (log: ${opts.logFile})`,
      );
    }
    try {
      const r = await fetchText(`${baseUrl}/health`, { timeoutMs: 2000 });
      if (r.status === 200) return { baseUrl, child, stop };
    } catch {
      // not listening yet
    }
    opts.onWait?.(Date.now() - t0);
    await new Promise((r) => setTimeout(r, 500));
  }
}
