/**
 * A cluster on loopback for the cluster test: real `sift serve` replicas (this checkout's dist/, the default
 * model) and a real nginx running the shipped deploy/nginx/sift.conf unchanged. The test writes only what the
 * shipped file leaves to the site: the replica list (with the shipped example's max_fails/fail_timeout
 * parameters), the listen address, and a main nginx.conf with process-level paths in a temporary directory.
 * Every wait has a deadline; stopAll() kills whatever is still running.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetchText, freePort } from '../../loadtest/target.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The project root (dist/tests/cluster -> ../../..). */
export const ROOT = path.resolve(here, '..', '..', '..');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');
export const SHIPPED_CONF = path.join(ROOT, 'deploy', 'nginx', 'sift.conf');
const SHIPPED_REPLICAS = path.join(ROOT, 'deploy', 'nginx', 'sift', 'replicas.conf');

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Thrown by a waitFor check to stop waiting at once (e.g. the process it waits for has exited). */
export class GiveUp extends Error {}

/**
 * Polls `check` every `everyMs` until it returns a value other than undefined, or throws after `ms`. Errors the
 * check throws count as "not yet", except GiveUp, which ends the wait.
 */
export async function waitFor<T>(
  what: string,
  ms: number,
  check: () => Promise<T | undefined>,
  everyMs = 100,
): Promise<T> {
  const t0 = Date.now();
  let last: unknown = null;
  while (Date.now() - t0 < ms) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      if (e instanceof GiveUp) throw e;
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(
    `timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`,
  );
}

/** The nginx binary, or an error that says how to get it. */
export function nginxBinary(): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin']) {
    const p = path.join(dir, 'nginx');
    if (dir && existsSync(p)) return p;
  }
  throw new Error(
    'nginx is not installed: the cluster test runs real sift replicas behind it. Run `npm run test:cluster` ' +
      "(or `sudo bash scripts/ensure-nginx.sh`), which installs Debian's nginx package.",
  );
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running process with its log file and its exit. */
export class Proc {
  exit: Exit | null = null;
  readonly exited: Promise<Exit>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly logFile: string,
  ) {
    const log = createWriteStream(logFile);
    child.stdout?.pipe(log, { end: false });
    child.stderr?.pipe(log, { end: false });
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        log.end();
        resolve(this.exit);
      }),
    );
  }

  get running(): boolean {
    return this.exit === null;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.child.kill(sig);
  }

  /** Waits for the exit, at most `ms`. */
  async waitExit(ms: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} still running after ${ms} ms`)), ms);
    });
    try {
      return await Promise.race([this.exited, t]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    try {
      await this.waitExit(graceMs);
    } catch {
      this.signal('SIGKILL');
      await this.waitExit(5000).catch(() => {});
    }
  }

  log(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }
}

export interface Replica {
  id: string;
  port: number;
  /** http://127.0.0.1:PORT */
  url: string;
  /** ADDRESS:PORT as nginx's replica list and /replicas/ADDRESS:PORT/metrics name it. */
  addr: string;
  proc: Proc;
}

/** Starts `sift serve` replicas at once and waits until each answers GET /health 200. */
export async function startReplicas(
  ids: string[],
  dir: string,
  serveArgs: string[],
  readyMs: number,
): Promise<Replica[]> {
  const replicas: Replica[] = [];
  for (const id of ids) {
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [CLI, 'serve', '--host', '127.0.0.1', '--port', String(port), '--replica-id', id, ...serveArgs],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const proc = new Proc(id, child, path.join(dir, `${id}.log`));
    replicas.push({ id, port, url: `http://127.0.0.1:${port}`, addr: `127.0.0.1:${port}`, proc });
  }
  try {
    await Promise.all(
      replicas.map((r) =>
        waitFor(
          `replica ${r.id} to answer GET /health 200`,
          readyMs,
          async () => {
            if (!r.proc.running)
              throw new GiveUp(`${r.id} exited early (${JSON.stringify(r.proc.exit)}):\n${r.proc.log().slice(-2000)}`);
            const h = await fetchText(`${r.url}/health`, { timeoutMs: 2000 });
            return h.status === 200 ? true : undefined;
          },
          250,
        ),
      ),
    );
  } catch (e) {
    await Promise.all(replicas.map((r) => r.proc.stop(2000)));
    throw e;
  }
  return replicas;
}

export interface Nginx {
  url: string;
  port: number;
  proc: Proc;
  dir: string;
}

/**
 * Runs nginx with the shipped sift.conf in front of `replicas`: dir/nginx.conf (process-level: pid, logs, temp
 * paths, one worker) includes deploy/nginx/sift.conf, whose relative includes resolve in dir/sift/.
 */
export async function startNginx(replicas: { addr: string }[], dir: string, readyMs = 10_000): Promise<Nginx> {
  const bin = nginxBinary();
  const port = await freePort();
  mkdirSync(path.join(dir, 'sift'), { recursive: true });
  // The shipped example's parameters (max_fails, fail_timeout, ...) on every test replica's line.
  const example = readFileSync(SHIPPED_REPLICAS, 'utf8')
    .split('\n')
    .find((l) => /^\s*server\s/.test(l));
  const params = example?.trim().replace(/;$/, '').split(/\s+/).slice(2) ?? [];
  writeFileSync(
    path.join(dir, 'sift', 'replicas.conf'),
    replicas.map((r) => `server ${r.addr} ${params.join(' ')};\n`).join(''),
  );
  writeFileSync(path.join(dir, 'sift', 'listen.conf'), `listen 127.0.0.1:${port};\n`);
  const user = process.getuid?.() === 0 ? 'user root root;\n' : '';
  writeFileSync(
    path.join(dir, 'nginx.conf'),
    `${user}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 1024; }
http {
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    include ${SHIPPED_CONF};
    access_log ${dir}/access.log sift;
}
`,
  );
  const args = ['-p', dir, '-c', path.join(dir, 'nginx.conf')];
  // -e (nginx >= 1.19.5) keeps even the start-up messages out of the system's error log.
  const v = /nginx\/(\d+)\.(\d+)\.(\d+)/.exec(spawnSync(bin, ['-v'], { encoding: 'utf8' }).stderr ?? '');
  if (v && Number(v[1]) * 1e6 + Number(v[2]) * 1e3 + Number(v[3]) >= 1_019_005)
    args.push('-e', path.join(dir, 'error.log'));
  const t = spawnSync(bin, ['-t', ...args], { encoding: 'utf8', timeout: 10_000 });
  if (t.status !== 0) throw new Error(`nginx -t rejects the configuration:\n${t.stderr}`);
  const proc = new Proc('nginx', spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] }), path.join(dir, 'nginx.out'));
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitFor('nginx to answer GET /health', readyMs, async () => {
      if (!proc.running)
        throw new GiveUp(`nginx exited: ${readFileSync(path.join(dir, 'error.log'), 'utf8').slice(-2000)}`);
      const h = await fetchText(`${url}/health`, { timeoutMs: 2000 });
      return h.status === 200 ? true : undefined;
    });
  } catch (e) {
    await proc.stop(2000);
    throw e;
  }
  return { url, port, proc, dir };
}

/** Prometheus text -> value of an unlabelled sample. */
export function metricValue(text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[:]/g, '\\:')} ([0-9.eE+-]+)$`, 'm').exec(text);
  if (!m) throw new Error(`metric ${name} not found`);
  return Number(m[1]);
}

/** A replica's /metrics through the balancer's /replicas/ADDRESS:PORT/metrics route. */
export async function replicaMetrics(nginx: Nginx, r: Replica): Promise<string> {
  const res = await fetchText(`${nginx.url}/replicas/${r.addr}/metrics`, { timeoutMs: 5000 });
  if (res.status !== 200)
    throw new Error(`GET /replicas/${r.addr}/metrics: HTTP ${res.status} ${res.text.slice(0, 200)}`);
  return res.text;
}
