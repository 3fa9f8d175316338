/**
 * Listening and graceful shutdown, apart from the app factory. On SIGTERM/SIGINT: stop accepting connections
 * (fastify answers 503 on kept-alive sockets meanwhile), let in-flight requests finish for up to graceMs, then the
 * engine cancels the rest (their streams end), release the GPU, and exit 0. A second signal exits at once.
 */
import type { FastifyInstance } from 'fastify';
import type { EngineClient } from '../engine/client.js';

export interface Listening {
  /** e.g. http://127.0.0.1:8000 */
  url: string;
  port: number;
}

export async function listen(app: FastifyInstance, opts: { host: string; port: number }): Promise<Listening> {
  await app.listen({ host: opts.host, port: opts.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return { url: `http://${host}:${port}`, port };
}

/**
 * Stops the server: no new connections, in-flight requests get graceMs, then the engine cancels what is left and
 * releases the GPU. Resolves when every response has ended (connections still open after the bound are destroyed).
 */
export async function shutdown(app: FastifyInstance, engine: EngineClient | null, graceMs: number): Promise<void> {
  const closing = app.close();
  // Keep-alive sockets whose last response ends during the grace period would otherwise linger until their
  // keep-alive timeout: close each as soon as it goes idle.
  const sweep = setInterval(() => app.server.closeIdleConnections(), 25);
  sweep.unref();
  closing.finally(() => clearInterval(sweep)).catch(() => {});
  const engineDone = engine
    ? engine.shutdown(graceMs).catch((err) => app.log.error({ err }, 'engine shutdown failed'))
    : Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), graceMs + 2000);
    timer.unref();
  });
  const r = await Promise.race([Promise.all([closing, engineDone]).then(() => 'ok' as const), bound]);
  clearTimeout(timer);
  if (r === 'timeout') {
    app.log.warn('shutdown: connections still open after the grace period; closing them');
    app.server.closeAllConnections();
    await Promise.race([closing, new Promise((res) => setTimeout(res, 1000).unref())]);
  }
}

/**
 * Installs SIGTERM/SIGINT handlers that shut down and call `exit(0)`; a second signal calls `exit(1)` at once.
 * Returns a function that removes them.
 */
export function onSignals(
  app: FastifyInstance,
  opts: { engine: () => EngineClient | null; graceMs: number; exit?: (code: number) => void },
): () => void {
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      app.log.warn({ signal }, 'second signal: exiting now');
      exit(1);
      return;
    }
    stopping = true;
    app.log.info({ signal, graceMs: opts.graceMs }, 'shutting down: finishing in-flight requests');
    shutdown(app, opts.engine(), opts.graceMs).then(
      () => {
        app.log.info('shutdown complete');
        exit(0);
      },
      (err) => {
        app.log.error({ err }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  return () => {
    process.off('SIGTERM', handler);
    process.off('SIGINT', handler);
  };
}

/** The exit status `sift serve` ends with after a GPU device fault (EX_SOFTWARE): a supervisor restarts it. */
export const FAULT_EXIT_CODE = 70;

/**
 * After a GPU device fault (the engine's onDeviceFault): every live request has already been answered with a 503
 * or an SSE error, and /health says 503. The process does not try to rebuild the device in place (the fault may be
 * a driver or memory problem that would come back, and a fresh process is the state everything was tested in): it
 * stops accepting, lets those answers go out (at most `graceMs`), and exits with FAULT_EXIT_CODE for its
 * supervisor (systemd Restart=on-failure, a container restart policy) to start a new one.
 */
export async function exitAfterFault(
  app: FastifyInstance,
  engine: EngineClient | null,
  err: Error,
  opts: { graceMs?: number; exit?: (code: number) => void } = {},
): Promise<void> {
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  app.log.fatal({ err }, `GPU device fault: exiting with status ${FAULT_EXIT_CODE} for a supervisor to restart sift`);
  try {
    await shutdown(app, engine, opts.graceMs ?? 1000);
  } finally {
    exit(FAULT_EXIT_CODE);
  }
}
