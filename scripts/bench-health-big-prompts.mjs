#!/usr/bin/env node
// /health latency while clients send huge prompts (the reliability issue's item 3): starts `sift serve` (this
// checkout's dist/, default model) with the given flags, runs --clients child processes that each POST a chat
// completion with a --mb MB message in a loop, and polls GET /health every 20 ms from this process meanwhile.
// Prints and writes (--out FILE.json) the /health latency distribution and what the big requests got.
// Usage: node scripts/bench-health-big-prompts.mjs [--seconds 30] [--clients 4] [--mb 7] [--out F] [-- serve flags]
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { metricValue } from '../dist/loadtest/soak.js';
import { summarize } from '../dist/loadtest/stats.js';
import { fetchText, spawnSift } from '../dist/loadtest/target.js';

const argv = process.argv.slice(2);
const dash = argv.indexOf('--');
const serveArgs = dash >= 0 ? argv.slice(dash + 1) : [];
const own = dash >= 0 ? argv.slice(0, dash) : argv;
const opt = (name, def) => {
  const i = own.indexOf(`--${name}`);
  return i >= 0 ? own[i + 1] : def;
};
const seconds = Number(opt('seconds', 30));
const clients = Number(opt('clients', 4));
const mb = Number(opt('mb', 7));
const out = opt('out', null);

/** Polls GET /health every 20 ms until `until` (Date.now()); returns latencies and failures. */
async function probe(baseUrl, until) {
  const ms = [];
  const failures = [];
  while (Date.now() < until) {
    const t0 = performance.now();
    try {
      const r = await fetchText(`${baseUrl}/health`, { timeoutMs: 10000 });
      if (r.status !== 200) failures.push(r.status);
    } catch (e) {
      failures.push(String(e.message));
    }
    ms.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 20));
  }
  return { ms, failures };
}

const server = await spawnSift({
  logFile: path.join(os.tmpdir(), `sift-health-bench-${process.pid}.log`),
  readyTimeoutMs: 600_000,
  args: ['--log-level', 'warn', ...serveArgs],
});
const model = JSON.parse((await fetchText(`${server.baseUrl}/v1/models`)).text).data[0].id;
// The same probe with no big clients first: on a shared machine the baseline is not 1 ms.
const baseline = summarize((await probe(server.baseUrl, Date.now() + Math.min(10, seconds) * 1000)).ms);

// The server's own event-loop delay (prom-client's monitorEventLoopDelay, reset at every scrape): this tells a
// blocked event loop from a process that waits for a core on a busy machine.
const loopLag = async () => {
  const t = (await fetchText(`${server.baseUrl}/metrics`)).text;
  const ms = (n) => (metricValue(t, n) ?? Number.NaN) * 1000;
  return {
    p50: ms('nodejs_eventloop_lag_p50_seconds'),
    p99: ms('nodejs_eventloop_lag_p99_seconds'),
    max: ms('nodejs_eventloop_lag_max_seconds'),
  };
};
const lagBaseline = await loopLag();

// One child process per client, so that building and sending 7 MB bodies never delays this process's probes.
const clientSrc = `
  const [url, model, mb, seconds] = process.argv.slice(1);
  const words = 'Once upon a time there was a little girl who loved to play outside in the sun. ';
  const content = words.repeat(Math.ceil((Number(mb) * 1e6) / words.length));
  const body = Buffer.from(JSON.stringify({ model, messages: [{ role: 'user', content }], max_tokens: 4 }));
  const end = Date.now() + Number(seconds) * 1000;
  (async () => {
    while (Date.now() < end) {
      const t0 = performance.now();
      try {
        const r = await fetch(url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        const j = await r.json();
        console.log(JSON.stringify({ status: r.status, code: j.error?.code ?? null, ms: performance.now() - t0 }));
      } catch (e) {
        console.log(JSON.stringify({ status: 0, code: String(e.message), ms: performance.now() - t0 }));
      }
    }
  })();
`;
const bigResults = [];
const children = Array.from({ length: clients }, () => {
  const c = spawn(process.execPath, ['-e', clientSrc, server.baseUrl, model, String(mb), String(seconds)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let buf = '';
  c.stdout.on('data', (b) => {
    buf += b.toString();
    const lines = buf.split('\n');
    buf = lines.pop();
    for (const l of lines) if (l.trim()) bigResults.push(JSON.parse(l));
  });
  return new Promise((r) => c.on('exit', r));
});

await new Promise((r) => setTimeout(r, 500)); // let the first bodies start
const { ms: health, failures } = await probe(server.baseUrl, Date.now() + seconds * 1000);
const lagUnderLoad = await loopLag();
await Promise.all(children);
await server.stop();

const h = summarize(health);
const byStatus = {};
for (const r of bigResults)
  byStatus[`${r.status} ${r.code ?? ''}`.trim()] = (byStatus[`${r.status} ${r.code ?? ''}`.trim()] ?? 0) + 1;
const big = summarize(bigResults.map((r) => r.ms));
const report = {
  date: new Date().toISOString(),
  command: `node scripts/bench-health-big-prompts.mjs ${process.argv.slice(2).join(' ')}`,
  host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '', load: os.loadavg() },
  seconds,
  clients,
  mb,
  serveArgs,
  healthBaselineMs: baseline,
  healthMs: h,
  healthFailures: failures.length,
  serverEventLoopDelayMs: { baseline: lagBaseline, withBigClients: lagUnderLoad },
  bigRequests: { n: bigResults.length, byStatus, ms: big },
};
const f = (x) => (x === null ? '-' : x.toFixed(1));
console.log(
  `/health over ${seconds} s with ${clients} clients sending ${mb} MB prompts (${serveArgs.join(' ') || 'default flags'}):\n` +
    `  n ${h.n}, p50 ${f(h.p50)} ms, p90 ${f(h.p90)} ms, p99 ${f(h.p99)} ms, max ${f(h.max)} ms, failures ${failures.length}\n` +
    `  (no big clients: p50 ${f(baseline.p50)} ms, p90 ${f(baseline.p90)} ms, p99 ${f(baseline.p99)} ms; load ${os.loadavg()[0].toFixed(1)})\n` +
    `  server event-loop delay: no big clients p99 ${f(lagBaseline.p99)} max ${f(lagBaseline.max)} ms; with them p99 ${f(lagUnderLoad.p99)} max ${f(lagUnderLoad.max)} ms\n` +
    `  big requests: ${bigResults.length} (${JSON.stringify(byStatus)}), p50 ${f(big.p50)} ms, p99 ${f(big.p99)} ms`,
);
if (out) writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
