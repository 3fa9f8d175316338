#!/usr/bin/env node
// Time to first token of long prompts through the HTTP API: starts `sift serve` (from this checkout, or from
// --root DIR: another build of sift, e.g. a baseline commit) on a free port, waits for GET /health, sends one
// streaming /v1/completions request per --lens entry whose prompt is token ids (seeded random ids; BOS first),
// max_tokens 1, and takes the time from sending to the first SSE chunk that carries text. One untimed request of
// --warmup tokens (default 600; 0: none) goes first, so that no timed prompt pays for compiling the pipelines of a
// long prefill (seconds each on lavapipe). Prints one JSON line per prompt. Extra arguments after `--` go to `sift serve` (e.g. --prefill-mode block-sparse).
//
//   node scripts/ttft.mjs --lens 4096 --max-context 4160 [--root /tmp/sift-base] [-- --prefill-mode block-sparse]
//
// Not a test; used for the before/after rows of bench/results/PREFILL.md.
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';

const here = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dash = process.argv.indexOf('--');
const own = dash >= 0 ? process.argv.slice(2, dash) : process.argv.slice(2);
const serveExtra = dash >= 0 ? process.argv.slice(dash + 1) : [];
const USAGE = `usage: node scripts/ttft.mjs [options] [-- sift serve flags]

Time to first token of long prompts through the HTTP API (starts its own \`sift serve\` on a free port; one JSON line
per prompt on stdout).
  --lens LIST          prompt lengths in tokens, comma-separated (default 4096)
  --max-context N      the server's --max-context (default the longest prompt + 64, rounded up to 64)
  --kv-cache-mib N     the server's --kv-cache-mib (default its own)
  --root DIR           the sift build to serve (default this checkout; e.g. a baseline commit built elsewhere)
  --model NAME|DIR     model (default stories15M)
  --seed N             seed of the random prompt token ids (default 1)
  --warmup N           tokens of the untimed first request (default 600; 0: none)
  --label TEXT         copied into each JSON line
  -h, --help           this text`;
let values;
try {
  ({ values } = parseArgs({
    args: own,
    options: {
      root: { type: 'string', default: here },
      lens: { type: 'string', default: '4096' },
      'max-context': { type: 'string' },
      'kv-cache-mib': { type: 'string' },
      model: { type: 'string', default: 'stories15M' },
      seed: { type: 'string', default: '1' },
      label: { type: 'string', default: '' },
      warmup: { type: 'string', default: '600' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }));
} catch (e) {
  console.error(`ttft.mjs: ${e.message}\n\n${USAGE}`);
  process.exit(2);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const lens = values.lens.split(',').map(Number);
if (lens.some((n) => !Number.isInteger(n) || n < 1)) {
  console.error(`ttft.mjs: --lens ${values.lens}: expected positive whole token counts, comma-separated`);
  process.exit(2);
}
const maxContext = Number(values['max-context'] ?? Math.ceil((Math.max(...lens) + 64) / 64) * 64);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function get(url) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => req.destroy());
  });
}

/** Sends the prompt; resolves with ms to the first text chunk and the total ms. */
function timeFirstToken(port, ids) {
  const body = JSON.stringify({
    model: values.model,
    prompt: ids,
    max_tokens: 1,
    temperature: 0,
    stream: true,
  });
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = null;
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: '/v1/completions',
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        if (res.statusCode !== 200) {
          let t = '';
          res.on('data', (b) => {
            t += b;
          });
          res.on('end', () => reject(new Error(`HTTP ${res.statusCode}: ${t}`)));
          return;
        }
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (s) => {
          buf += s;
          if (first === null && /^data: \{.*"text"/m.test(buf)) first = performance.now() - t0;
        });
        res.on('end', () => {
          if (first === null) reject(new Error(`no text chunk in the stream: ${buf.slice(0, 500)}`));
          else resolve({ ttftMs: first, totalMs: performance.now() - t0 });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const port = await freePort();
const args = [
  path.join(values.root, 'dist', 'cli', 'main.js'),
  'serve',
  '--model',
  values.model,
  '--port',
  String(port),
  '--max-context',
  String(maxContext),
  '--log-level',
  'fatal',
  ...(values['kv-cache-mib'] ? ['--kv-cache-mib', values['kv-cache-mib']] : []),
  ...serveExtra,
];
const server = spawn(process.execPath, args, { cwd: values.root, stdio: ['ignore', 'inherit', 'inherit'] });
const stop = () => {
  if (server.exitCode === null) server.kill('SIGTERM');
};
process.on('exit', stop);
try {
  const t0 = performance.now();
  while ((await get(`http://127.0.0.1:${port}/health`)) !== 200) {
    if (server.exitCode !== null) throw new Error(`sift serve exited with ${server.exitCode}`);
    if (performance.now() - t0 > 600_000) throw new Error('server not ready after 600 s');
    await new Promise((r) => setTimeout(r, 2000));
  }
  let s = Number(values.seed) >>> 0;
  const rand = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s;
  };
  const warmup = Number(values.warmup);
  if (warmup > 0) await timeFirstToken(port, [1, ...Array.from({ length: warmup - 1 }, () => 3 + (rand() % 31000))]);
  const rows = [];
  for (const n of lens) {
    const ids = [1, ...Array.from({ length: n - 1 }, () => 3 + (rand() % 31000))];
    const load0 = (await import('node:os')).loadavg()[0];
    const r = await timeFirstToken(port, ids);
    const row = {
      label: values.label,
      root: values.root,
      serve: serveExtra.join(' '),
      warmupTokens: warmup,
      promptTokens: n,
      ttftS: +(r.ttftMs / 1000).toFixed(2),
      totalS: +(r.totalMs / 1000).toFixed(2),
      promptTokPerS: +((n / r.ttftMs) * 1000).toFixed(1),
      load1: [+load0.toFixed(1), +(await import('node:os')).loadavg()[0].toFixed(1)],
      date: new Date().toISOString(),
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
} finally {
  stop();
}
