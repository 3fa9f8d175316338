/** The replica plugin: X-Sift-Replica on every response, X-Session-Id checked, echoed and logged. */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { replicaIdOf, serverConfig } from '../../config/server.js';
import { buildApp } from '../../server/app.js';
import { FakeEngine } from './fake-engine.js';
import { cfg, parseSse, testApp, testText } from './helpers.js';

const chat = (extra: Record<string, unknown> = {}) => ({
  model: 'fake-model',
  messages: [{ role: 'user', content: 'Tell me a story.' }],
  max_tokens: 4,
  temperature: 0,
  ...extra,
});

test('replica id: --replica-id, env and config file, else the hostname; header-safe or a config error', () => {
  assert.equal(replicaIdOf(serverConfig({ flags: { replicaId: 'gpu-3' } })), 'gpu-3');
  assert.equal(replicaIdOf(serverConfig({ env: { SIFT_SERVER_REPLICA_ID: 'pod-a' } })), 'pod-a');
  assert.equal(replicaIdOf(serverConfig({ file: { replicaId: 'from-file' } })), 'from-file');
  assert.equal(
    replicaIdOf(serverConfig(), () => 'host-7'),
    'host-7',
  );
  assert.throws(() => replicaIdOf(serverConfig({ flags: { replicaId: 'two words' } })), /--replica-id must be/);
  assert.throws(() => replicaIdOf(serverConfig({ flags: { replicaId: 'x'.repeat(129) } })), /--replica-id must be/);
  assert.throws(() => replicaIdOf(serverConfig({ flags: { replicaId: 'é' } })), /--replica-id must be/);
});

test('every response names the replica: JSON, SSE, errors, health, metrics', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake, { config: cfg({ replicaId: 'replica-a', apiKeys: 'k1' }) });
  const auth = { authorization: 'Bearer k1' };
  const ok = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat(), headers: auth });
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(ok.headers['x-sift-replica'], 'replica-a');
  const s = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ stream: true }),
    headers: auth,
  });
  assert.equal(s.statusCode, 200);
  assert.equal(s.headers['content-type'], 'text/event-stream; charset=utf-8');
  assert.equal(s.headers['x-sift-replica'], 'replica-a');
  assert.ok(parseSse(s.body).done);
  const unauth = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
  assert.equal(unauth.statusCode, 401);
  assert.equal(unauth.headers['x-sift-replica'], 'replica-a');
  const missing = await app.inject({ method: 'GET', url: '/v1/nothing', headers: auth });
  assert.equal(missing.statusCode, 404);
  assert.equal(missing.headers['x-sift-replica'], 'replica-a');
  for (const url of ['/health', '/metrics']) {
    const r = await app.inject({ method: 'GET', url });
    assert.equal(r.statusCode, 200);
    assert.equal(r.headers['x-sift-replica'], 'replica-a', url);
  }
});

test('a replica still loading answers 503 with its name (a balancer retries the next one)', async (t) => {
  const app = await testApp(t, null, { config: cfg({ replicaId: 'loading-1' }), text: null });
  for (const [method, url] of [
    ['GET', '/health'],
    ['POST', '/v1/chat/completions'],
  ] as const) {
    const r = await app.inject({ method, url, ...(method === 'POST' ? { payload: chat() } : {}) });
    assert.equal(r.statusCode, 503, url);
    assert.equal(r.headers['x-sift-replica'], 'loading-1');
    assert.equal(r.json().error.code, 'not_ready');
  }
});

test('X-Session-Id is echoed and logged with the request; a malformed one is a 400 naming the header', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  const fake = await FakeEngine.story(await testText());
  const app = await buildApp({
    engine: fake,
    text: await testText(),
    config: cfg({ replicaId: 'r1' }),
    logger: pino({ level: 'info' }, sink),
  });
  t.after(() => app.close());
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat(),
    headers: { 'x-session-id': 'conv-42 user@example.com', 'x-request-id': 'req-s1' },
  });
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.headers['x-session-id'], 'conv-42 user@example.com');
  const done = lines.find((l) => l.msg === 'request done' && l.reqId === 'req-s1');
  assert.ok(done, 'one summary line for the request');
  assert.equal(done.session, 'conv-42 user@example.com');

  const none = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
  assert.equal(none.statusCode, 200);
  assert.equal(none.headers['x-session-id'], undefined);

  for (const bad of ['x'.repeat(257), 'tab\there']) {
    const b = await app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: chat(),
      headers: { 'x-session-id': bad },
    });
    assert.equal(b.statusCode, 400, bad);
    assert.equal(b.json().error.param, 'X-Session-Id');
    assert.equal(b.json().error.code, 'invalid_argument');
    assert.equal(b.headers['x-sift-replica'], 'r1');
  }
  assert.equal(fake.submitted.length, 2, 'malformed session ids never reach the engine');
});
