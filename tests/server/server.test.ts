/** listen() and graceful shutdown over real sockets (fake engine), and `sift serve` as a process (real model). */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import { buildApp } from '../../server/app.js';
import { listen, shutdown } from '../../server/server.js';
import { FakeEngine } from './fake-engine.js';
import { cfg, lastEvent, parseSse, testText } from './helpers.js';

function post(url: string, body: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}/v1/completions`,
      { method: 'POST', headers: { 'content-type': 'application/json' } },
      (res) => {
        let b = '';
        res.on('data', (c: Buffer) => (b += c.toString('utf8')));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

test('/health over HTTP: 503 while loading, 200 once the engine is installed', async (t) => {
  const text = await testText();
  const app = await buildApp({ engine: null, text: null, config: cfg() });
  t.after(() => app.close());
  const { url, port } = await listen(app, { host: '127.0.0.1', port: 0 });
  assert.ok(port > 0);
  assert.equal(url, `http://127.0.0.1:${port}`);
  assert.equal((await fetch(`${url}/health`)).status, 503);
  app.sift.state.ready(await FakeEngine.story(text), text);
  assert.equal((await fetch(`${url}/health`)).status, 200);
});

test('shutdown: in-flight streams finish within the grace period; new connections are refused', async () => {
  const text = await testText();
  const fake = await FakeEngine.story(text, { tokenMs: 10 });
  const app = await buildApp({ engine: fake, text, config: cfg() });
  const { url } = await listen(app, { host: '127.0.0.1', port: 0 });
  const inflight = post(url, { model: 'fake-model', prompt: 'x', max_tokens: 20, temperature: 0, stream: true });
  while (fake.stats().running === 0) await new Promise((r) => setTimeout(r, 2));
  await shutdown(app, fake, 5000);
  const r = await inflight;
  const s = parseSse(r.body);
  assert.ok(s.done);
  assert.equal(lastEvent(s).choices[0].finish_reason, 'length');
  assert.equal(fake.cancelled.size, 0);
  assert.equal(fake.shutdownCalls, 1);
  await assert.rejects(fetch(`${url}/health`));
});

test('shutdown: past the grace period what is left is cut with an error, never finish_reason length', async () => {
  const text = await testText();
  const fake = await FakeEngine.story(text, { tokenMs: 20 });
  const app = await buildApp({ engine: fake, text, config: cfg() });
  const { url } = await listen(app, { host: '127.0.0.1', port: 0 });
  const req = { model: 'fake-model', prompt: 'x', max_tokens: 200, temperature: 0 };
  const streamed = post(url, { ...req, stream: true });
  const whole = post(url, req);
  while (fake.stats().running < 2) await new Promise((r) => setTimeout(r, 2));
  const t0 = performance.now();
  await shutdown(app, fake, 100);
  assert.ok(performance.now() - t0 < 2000);
  // The stream got text, then an error event (no finish chunk), and still ends cleanly.
  const s = parseSse((await streamed).body);
  assert.ok(s.done);
  assert.ok(s.events.length >= 2);
  const last = s.events.at(-1) as { error?: { code: string; type: string } };
  assert.deepEqual(last.error && { code: last.error.code, type: last.error.type }, {
    code: 'shutting_down',
    type: 'server_error',
  });
  for (const e of s.events.slice(0, -1)) {
    assert.equal((e.choices as Array<{ finish_reason: string | null }>)[0].finish_reason, null);
  }
  // The non-streamed request gets a 503, not a truncated 200.
  const w = await whole;
  assert.equal(w.status, 503);
  assert.equal(JSON.parse(w.body).error.code, 'shutting_down');
  assert.equal(fake.cancelled.size, 2);
});

/** `sift serve` with `args` as a child process: its URL once listening, its output, and a wait for log lines. */
function serveProcess(args: string[]) {
  const cli = path.resolve('dist/cli/main.js');
  const child = spawn(process.execPath, [cli, 'serve', '--port', '0', '--log-level', 'info', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const state = { url: '', ready: false, out: '', lines: [] as Array<Record<string, unknown>> };
  let pending = '';
  child.stdout.on('data', (c: Buffer) => {
    const chunk = c.toString('utf8');
    state.out += chunk;
    pending += chunk;
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const line of parts) {
      if (!line.startsWith('{')) continue;
      const j = JSON.parse(line) as { msg: string; url?: string };
      state.lines.push(j);
      if (j.url && !state.url) state.url = j.url;
      if (j.msg === 'model ready') state.ready = true;
    }
  });
  child.stderr.on('data', (c: Buffer) => (state.out += c.toString('utf8')));
  const waitFor = (pred: () => boolean, what: string, ms = 60000) =>
    new Promise<void>((resolve, reject) => {
      const t0 = Date.now();
      const tick = () =>
        pred()
          ? resolve()
          : Date.now() - t0 > ms
            ? reject(new Error(`timed out waiting for ${what}\n${state.out}`))
            : setTimeout(tick, 20);
      tick();
    });
  return { child, exited, state, waitFor };
}

test('sift serve: 200 once loaded, answers, and exits 0 on SIGTERM after finishing in-flight work', async () => {
  const { child, exited, state, waitFor } = serveProcess(['--shutdown-grace-ms', '5000', '--api-key', 'k1']);
  try {
    await waitFor(() => state.url !== '', 'the listening line');
    await waitFor(() => state.ready, 'model ready');
    const url = state.url;
    assert.equal((await fetch(`${url}/health`)).status, 200);
    const headers = { 'content-type': 'application/json', authorization: 'Bearer k1' };
    const body = JSON.stringify({
      model: 'stories15M',
      prompt: 'Once upon a time',
      max_tokens: 12,
      temperature: 0,
      stream: true,
    });
    const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers, body });
    assert.equal(res.status, 200);
    const reader = res.body?.getReader();
    assert.ok(reader);
    let sse = '';
    const first = await reader.read();
    sse += Buffer.from(first.value ?? []).toString('utf8');
    child.kill('SIGTERM');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      sse += Buffer.from(value).toString('utf8');
    }
    const s = parseSse(sse);
    assert.ok(s.done, 'the in-flight stream finished');
    assert.equal(
      s.events.map((e) => (e.choices as Array<{ text: string }>)[0]?.text ?? '').join(''),
      ', there was a little girl named Lily. She loved',
    );
    assert.equal(await exited, 0);
    assert.match(state.out, /"msg":"shutdown complete"/);
    assert.match(state.out, /"msg":"request done"/);
    // the log is JSON lines only: Dawn's two native warnings are filtered out of the process's stderr
    for (const line of state.out.split('\n').filter((l) => l.trim() !== '')) {
      assert.doesNotThrow(() => JSON.parse(line), `a log line that is not JSON: ${line}`);
    }
  } finally {
    child.kill('SIGKILL');
  }
});

test('sift serve --kv-cache-mib 1: says at startup the cache holds 128 of 256 tokens; 100 + 100 is a 400', async () => {
  const { child, exited, state, waitFor } = serveProcess(['--kv-cache-mib', '1']);
  try {
    await waitFor(() => state.ready, 'model ready');
    const warn = state.lines.find((l) => /KV cache/.test(String(l.msg)));
    assert.ok(warn, state.out);
    assert.equal(warn.level, 40);
    assert.equal(warn.kvCacheTokens, 128);
    assert.equal(warn.maxContext, 256);
    assert.match(String(warn.msg), /at most 128 tokens/);
    assert.match(String(warn.msg), /--kv-cache-mib 2 holds the whole context/);
    const prompt = Array.from({ length: 100 }, (_, i) => 400 + i);
    const post = (max_tokens: number) =>
      fetch(`${state.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'stories15M', prompt, max_tokens, temperature: 0 }),
      });
    const r = await post(100);
    assert.equal(r.status, 400);
    const e = ((await r.json()) as { error: { code: string; param: string } }).error;
    assert.deepEqual([e.code, e.param], ['context_length_exceeded', 'max_tokens']);
    // what fits the cache runs to its own limit
    const ok = await post(28);
    assert.equal(ok.status, 200);
    const b = (await ok.json()) as { choices: Array<{ finish_reason: string }>; usage: { completion_tokens: number } };
    assert.equal(b.choices[0].finish_reason, 'length');
    assert.equal(b.usage.completion_tokens, 28);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    child.kill('SIGKILL');
  }
});
