#!/usr/bin/env node
// The API fuzz (tests/helpers/fuzz.ts) against a live server: --runs seeded broken requests over HTTP with
// --concurrency in flight, each judged (no 5xx, OpenAI-shaped errors naming the broken field, complete 200s); a
// greedy completion before and after must be the same, and no KV page may be held once the server is idle.
// Without --url it starts `sift serve` (this checkout's dist/, default model) with --max-body-bytes (so that
// bodies over the limit stay cheap to send) and stops it afterwards.
// Usage: node scripts/fuzz-server.mjs [--runs 10000] [--seed 20261201] [--concurrency 4] [--url BASE]
//        [--model NAME] [--vocab 32000] [--max-body-bytes 1048576] [--out FILE.json]   (after `npm run build`)
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { metricValue } from '../dist/loadtest/soak.js';
import { fetchText, spawnSift } from '../dist/loadtest/target.js';
import { fuzzCases, runFuzz } from '../dist/tests/helpers/fuzz.js';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const runs = Number(opt('runs', 10000));
const seed = Number(opt('seed', 20261201));
const concurrency = Number(opt('concurrency', 4));
const maxBodyBytes = Number(opt('max-body-bytes', 1 << 20));
const vocabSize = Number(opt('vocab', 32000));
const out = opt('out', null);
let baseUrl = opt('url', null);
let server = null;
if (!baseUrl) {
  server = await spawnSift({
    logFile: path.join(os.tmpdir(), `sift-fuzz-${process.pid}.log`),
    readyTimeoutMs: 600_000,
    args: ['--log-level', 'warn', '--max-body-bytes', String(maxBodyBytes)],
  });
  baseUrl = server.baseUrl;
}
const model = opt('model', JSON.parse((await fetchText(`${baseUrl}/v1/models`)).text).data[0].id);

/**
 * Sends a raw request. A body over the server's limit is answered (413) from its Content-Length before it is read,
 * and the server then resets the connection: for those, the headers go first and the body only if no answer comes
 * within 2 s, so that the 413 is read rather than lost to the reset.
 */
function send(c) {
  return new Promise((resolve, reject) => {
    const u = new URL(c.url, baseUrl);
    const body = Buffer.from(c.body, 'utf8');
    let gotResponse = false;
    let answered = false;
    const req = http.request(
      u,
      { method: c.method, headers: { ...c.headers, 'content-length': body.length }, agent: false, timeout: 600_000 },
      (res) => {
        gotResponse = true;
        const chunks = [];
        res.on('data', (b) => chunks.push(b));
        res.on('end', () => {
          answered = true;
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
          if (body.length > maxBodyBytes) req.destroy();
        });
        res.on('error', (e) => (answered ? null : reject(e)));
      },
    );
    req.on('error', (e) => (answered ? null : reject(e)));
    req.on('timeout', () => req.destroy(new Error('timed out')));
    if (body.length <= maxBodyBytes) {
      req.end(body);
      return;
    }
    req.flushHeaders();
    setTimeout(() => {
      if (!gotResponse) req.end(body);
    }, 2000);
  });
}

const greedy = async () => {
  const r = await send({
    method: 'POST',
    url: '/v1/completions',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 }),
  });
  if (r.status !== 200) throw new Error(`greedy completion: HTTP ${r.status} ${r.body}`);
  return JSON.parse(r.body).choices[0].text;
};

const t0 = performance.now();
const before = await greedy();
const cases = fuzzCases({ model, vocabSize, maxBodyBytes, maxTokens: 4 }, seed, runs);
let last = 0;
const stopServer = () => server?.child.kill('SIGTERM');
process.on('uncaughtException', (e) => {
  stopServer();
  throw e;
});
const { failures, byStatus } = await runFuzz(cases, send, {
  concurrency,
  onProgress: (n) => {
    if (performance.now() - last > 5000) {
      last = performance.now();
      process.stderr.write(`fuzz: ${n}/${runs}\r`);
    }
  },
}).catch((e) => {
  stopServer();
  throw e;
});
const after = await greedy();
// idle: nothing running, every KV page back
let pagesUsed = null;
for (let i = 0; i < 120; i++) {
  const m = (await fetchText(`${baseUrl}/metrics`)).text;
  const busy = (metricValue(m, 'sift:num_requests_running') ?? 0) + (metricValue(m, 'sift:num_requests_waiting') ?? 0);
  pagesUsed = metricValue(m, 'sift:kv_cache_pages_used');
  if (busy === 0) break;
  await new Promise((r) => setTimeout(r, 500));
}
const health = (await fetchText(`${baseUrl}/health`)).status;
if (server) await server.stop();

const fiveXX = Object.entries(byStatus)
  .filter(([s]) => Number(s) >= 500)
  .reduce((n, [, k]) => n + k, 0);
const report = {
  date: new Date().toISOString(),
  command: `node scripts/fuzz-server.mjs ${args.join(' ')}`.trim(),
  host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '', loadAvg: os.loadavg() },
  model,
  runs,
  seed,
  concurrency,
  maxBodyBytes,
  seconds: Math.round((performance.now() - t0) / 1000),
  byStatus,
  fiveXX,
  failures: failures.length,
  failureExamples: failures.slice(0, 20).map((f) => ({ what: f.case.what, url: f.case.url, problem: f.problem })),
  greedyUnchanged: before === after,
  greedyText: before,
  kvPagesUsedAfter: pagesUsed,
  healthAfter: health,
};
console.log(JSON.stringify(report, null, 2));
if (out) writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
process.exitCode = failures.length === 0 && report.greedyUnchanged && pagesUsed === 0 && health === 200 ? 0 : 1;
