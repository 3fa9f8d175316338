/** Every error status the API answers, with OpenAI's JSON shape: {"error": {message, type, param, code}}. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { SiftError } from '../../config/errors.js';
import { FakeEngine } from './fake-engine.js';
import { cfg, parseSse, testApp, testText } from './helpers.js';

const chat = (extra: Record<string, unknown> = {}) => ({
  model: 'fake-model',
  messages: [{ role: 'user', content: 'Hello' }],
  max_tokens: 4,
  temperature: 0,
  ...extra,
});

function assertError(
  r: LightMyRequestResponse,
  status: number,
  want: { type: string; code: string; param?: string | null },
): { message: string } {
  assert.equal(r.statusCode, status, r.body);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  const b = r.json();
  assert.deepEqual(Object.keys(b), ['error']);
  assert.deepEqual(Object.keys(b.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof b.error.message, 'string');
  assert.ok(b.error.message.length > 0);
  assert.equal(b.error.type, want.type);
  assert.equal(b.error.code, want.code);
  if (want.param !== undefined) assert.equal(b.error.param, want.param);
  return b.error;
}

const invalid = (param: string) => ({ type: 'invalid_request_error', code: 'invalid_argument', param });

test('400: schema violations name the field', async (t) => {
  const app = await testApp(t, await FakeEngine.story(await testText()));
  const post = (payload: unknown, url = '/v1/chat/completions') =>
    app.inject({ method: 'POST', url, payload: payload as Record<string, unknown> });
  const e = assertError(await post(chat({ temperature: 5 })), 400, invalid('temperature'));
  assert.match(e.message, /^temperature must be <= 2/);
  assertError(await post(chat({ temperature: '0.5' })), 400, invalid('temperature'));
  assertError(await post(chat({ top_p: 0 })), 400, invalid('top_p'));
  assertError(await post(chat({ max_tokens: 0 })), 400, invalid('max_tokens'));
  assertError(await post(chat({ n: 1.5 })), 400, invalid('n'));
  assertError(await post(chat({ stop: ['a', 'b', 'c', 'd', 'e'] })), 400, invalid('stop'));
  assertError(await post(chat({ top_logprobs: 21 })), 400, invalid('top_logprobs'));
  const mode = assertError(await post(chat({ attention: { mode: 'fancy' } })), 400, invalid('attention.mode'));
  assert.equal(mode.message, 'attention.mode must be one of dense, sparse (got "fancy")');
  // a typo in sift's own field names the key and the known ones (not ajv's "must NOT have additional properties")
  const typo = assertError(
    await post(chat({ attention: { mode: 'sparse', token_budgt: 1024 } })),
    400,
    invalid('attention.token_budgt'),
  );
  assert.equal(typo.message, 'attention.token_budgt is not a known field (known: mode, token_budget)');
  // the one token-budget rule: at least two pages (the sink page and the newest page), as for the flag
  for (const budget of [10, 64, 127]) {
    const b = assertError(
      await post(chat({ attention: { mode: 'sparse', token_budget: budget } })),
      400,
      invalid('attention.token_budget'),
    );
    assert.match(b.message, new RegExp(`at least 128 tokens: 2 pages of 64.*\\(got ${budget}\\)`));
  }
  assertError(
    await post(chat({ attention: { mode: 'sparse', token_budget: 0 } })),
    400,
    invalid('attention.token_budget'),
  );
  const role = assertError(
    await post(chat({ messages: [{ role: 'wizard', content: 'x' }] })),
    400,
    invalid('messages[0].role'),
  );
  assert.match(role.message, /messages\[0\]\.role .*user/);
  assertError(
    await post(chat({ messages: [{ role: 'user', content: 'a' }, { content: 'x' }] })),
    400,
    invalid('messages[1].role'),
  );
  assertError(await post(chat({ messages: [] })), 400, invalid('messages'));
  const miss = assertError(await post({ model: 'fake-model' }), 400, invalid('messages'));
  assert.equal(miss.message, 'messages is required');
  assertError(await post({ messages: [{ role: 'user', content: 'x' }] }), 400, invalid('model'));
  assertError(await post({ model: 'fake-model', prompt: 5 }, '/v1/completions'), 400, invalid('prompt'));
  assertError(
    await post({ model: 'fake-model', prompt: 'x', logprobs: true }, '/v1/completions'),
    400,
    invalid('logprobs'),
  );
  // The chat template's own validation (content parts) also names the field.
  assertError(
    await post(chat({ messages: [{ role: 'user', content: [{ type: 'image_url' }] }] })),
    400,
    invalid('messages[0].content[0].type'),
  );
  // Malformed JSON is a 400 too.
  const bad = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: '{"model": ',
    headers: { 'content-type': 'application/json' },
  });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.type, 'invalid_request_error');
});

test('400 context_length_exceeded: prompt too long, or prompt + max_tokens over the limit', async (t) => {
  const fake = await FakeEngine.story(await testText(), { maxContext: 32 });
  const app = await testApp(t, fake);
  const long = 'once upon a time '.repeat(20);
  const e = assertError(
    await app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: chat({ messages: [{ role: 'user', content: long }] }),
    }),
    400,
    { type: 'invalid_request_error', code: 'context_length_exceeded', param: 'messages' },
  );
  assert.match(e.message, /maximum context length is 32 tokens/);
  assertError(
    await app.inject({
      method: 'POST',
      url: '/v1/completions',
      payload: { model: 'fake-model', prompt: 'Hi', max_tokens: 31 },
    }),
    400,
    {
      type: 'invalid_request_error',
      code: 'context_length_exceeded',
      param: 'max_tokens',
    },
  );
  assertError(
    await app.inject({ method: 'POST', url: '/v1/completions', payload: { model: 'fake-model', prompt: long } }),
    400,
    {
      type: 'invalid_request_error',
      code: 'context_length_exceeded',
      param: 'prompt',
    },
  );
  // The param is the body field the client used for the limit.
  const ctx = (param: string) => ({ type: 'invalid_request_error', code: 'context_length_exceeded', param });
  const post = (payload: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat(payload) });
  assertError(await post({ max_tokens: 31, max_completion_tokens: 40 }), 400, ctx('max_completion_tokens'));
  assertError(await post({ max_tokens: 40 }), 400, ctx('max_tokens'));
  // A prompt that leaves no room is the prompt's fault whatever max_tokens says.
  assertError(await post({ messages: [{ role: 'user', content: long }], max_tokens: 40 }), 400, ctx('messages'));
  assert.equal(fake.submitted.length, 0);
});

test('400 for token ids outside the vocabulary names the id in the body', async (t) => {
  const text = await testText();
  const fake = await FakeEngine.story(text);
  const app = await testApp(t, fake);
  const V = text.tokenizer.vocabSize;
  const post = (prompt: unknown) =>
    app.inject({ method: 'POST', url: '/v1/completions', payload: { model: 'fake-model', prompt, max_tokens: 2 } });
  const e = assertError(await post([1, 5, V]), 400, invalid('prompt[2]'));
  assert.match(e.message, new RegExp(`token id ${V} is outside the vocabulary`));
  assertError(
    await post([
      [1, 5],
      [1, V + 7, 6],
    ]),
    400,
    invalid('prompt[1][1]'),
  );
  assert.equal(fake.submitted.length, 1, 'the first prompt was admitted, then cancelled with the request');
  assert.deepEqual([...fake.cancelled], [fake.submitted[0].id]);
  assert.equal((await post([1, V - 1])).statusCode, 200);
});

test('404: unknown model (model_not_found) and unknown route', async (t) => {
  const app = await testApp(t, await FakeEngine.story(await testText()));
  const e = assertError(
    await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ model: 'gpt-4' }) }),
    404,
    {
      type: 'invalid_request_error',
      code: 'model_not_found',
      param: 'model',
    },
  );
  assert.match(e.message, /"gpt-4" does not exist/);
  assertError(
    await app.inject({ method: 'POST', url: '/v1/completions', payload: { model: 'nope', prompt: 'x' } }),
    404,
    {
      type: 'invalid_request_error',
      code: 'model_not_found',
    },
  );
  assertError(await app.inject({ method: 'GET', url: '/v1/nothing' }), 404, {
    type: 'invalid_request_error',
    code: 'not_found',
    param: null,
  });
});

test('413: body too large', async (t) => {
  const app = await testApp(t, await FakeEngine.story(await testText()), { config: cfg({ maxBodyBytes: 2048 }) });
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ messages: [{ role: 'user', content: 'x'.repeat(5000) }] }),
  });
  assertError(r, 413, { type: 'invalid_request_error', code: 'body_too_large', param: null });
});

test('401: missing or wrong API key; /health and /metrics stay open', async (t) => {
  const app = await testApp(t, await FakeEngine.story(await testText()), { config: cfg({ apiKeys: 'k1, k2' }) });
  const url = '/v1/chat/completions';
  const missing = assertError(await app.inject({ method: 'POST', url, payload: chat() }), 401, {
    type: 'invalid_request_error',
    code: 'invalid_api_key',
    param: null,
  });
  assert.match(missing.message, /missing API key/);
  assertError(
    await app.inject({ method: 'POST', url, payload: chat(), headers: { authorization: 'Bearer k3' } }),
    401,
    { type: 'invalid_request_error', code: 'invalid_api_key' },
  );
  assertError(await app.inject({ method: 'GET', url: '/v1/models', headers: { authorization: 'Basic k1' } }), 401, {
    type: 'invalid_request_error',
    code: 'invalid_api_key',
  });
  assert.equal(
    (await app.inject({ method: 'POST', url, payload: chat(), headers: { authorization: 'Bearer k2' } })).statusCode,
    200,
  );
  assert.equal(
    (await app.inject({ method: 'GET', url: '/v1/models', headers: { authorization: 'Bearer k1' } })).statusCode,
    200,
  );
  assert.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200);
  assert.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 200);
});

test('429 with Retry-After when the engine queue is full; a request is admitted whole or not at all', async (t) => {
  const text = await testText();
  const app = await testApp(
    t,
    await FakeEngine.story(text, { submitError: new SiftError('QUEUE_FULL', 'queue full') }),
  );
  const r = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
  assertError(r, 429, { type: 'rate_limit_error', code: 'rate_limit_exceeded', param: null });
  assert.equal(r.headers['retry-after'], '1');
  const rs = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ stream: true }) });
  assertError(rs, 429, { type: 'rate_limit_error', code: 'rate_limit_exceeded' });

  // Busy: n = 3 where the queue holds 3 but one place is taken. The two admitted choices are cancelled and the
  // client gets 429 (retry later).
  const fake = await FakeEngine.story(text, { maxLive: 3 });
  const app2 = await testApp(t, fake);
  const other = fake.submit({
    id: 'other',
    promptIds: [1, 5],
    maxTokens: 4,
    sampling: { temperature: 0, topP: 1, topK: 0, seed: null },
    stopIds: [],
  });
  const r2 = await app2.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { model: 'fake-model', prompt: 'x', n: 3 },
  });
  assertError(r2, 429, { type: 'rate_limit_error', code: 'rate_limit_exceeded' });
  assert.equal(r2.headers['retry-after'], '1');
  assert.equal(fake.submitted.length, 3);
  assert.deepEqual(
    [...fake.cancelled].sort(),
    fake.submitted
      .slice(1)
      .map((q) => q.id)
      .sort(),
  );
  other.cancel();
  const ok = await app2.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { model: 'fake-model', prompt: 'x', n: 3 },
  });
  assert.equal(ok.statusCode, 200, 'the cancelled choices left the queue');
});

test('400, not 429, for a request that could never be admitted: more choices than the queue holds', async (t) => {
  const fake = await FakeEngine.story(await testText(), { maxLive: 2 });
  const app = await testApp(t, fake);
  const post = (payload: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/v1/completions', payload: { model: 'fake-model', max_tokens: 2, ...payload } });
  // on an idle server, so a retry would fail the same way forever
  const e = assertError(await post({ prompt: 'x', n: 3 }), 400, invalid('n'));
  assert.match(e.message, /3 completions .*queues at most 2/);
  assertError(await post({ prompt: ['a', 'b', 'c'] }), 400, invalid('prompt'));
  assertError(await post({ prompt: ['a', 'b'], n: 2 }), 400, invalid('n'));
  assertError(
    await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ n: 3 }) }),
    400,
    invalid('n'),
  );
  assert.equal(fake.submitted.length, 0, 'nothing was queued');
  assert.equal((await post({ prompt: ['a', 'b'] })).statusCode, 200);
});

test('503 after device loss: non-stream 503, stream error event then [DONE], /health 503', async (t) => {
  const text = await testText();
  const lost = new SiftError('DEVICE_LOST', 'GPU device lost: VK_ERROR_DEVICE_LOST at /secret/driver/path');
  const fake = await FakeEngine.story(text, { failAfter: { tokens: 2, error: lost } });
  const app = await testApp(t, fake);
  const rs = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ stream: true }) });
  assert.equal(rs.statusCode, 200);
  const s = parseSse(rs.body);
  assert.ok(s.done);
  const last = s.events.at(-1) as { error: Record<string, unknown> };
  assert.deepEqual(last, {
    error: {
      message: 'the engine is unavailable (GPU device lost)',
      type: 'server_error',
      param: null,
      code: 'device_lost',
    },
  });
  assert.ok(!rs.body.includes('secret'));

  const h = await app.inject({ method: 'GET', url: '/health' });
  assertError(h, 503, { type: 'server_error', code: 'device_lost' });
  const r = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
  assertError(r, 503, { type: 'server_error', code: 'device_lost', param: null });
  assert.ok(!r.body.includes('secret'));

  // A non-stream request that meets the loss mid-generation also gets 503.
  const app2 = await testApp(t, await FakeEngine.story(text, { failAfter: { tokens: 1, error: lost } }));
  const r2 = await app2.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { model: 'fake-model', prompt: 'x' },
  });
  assertError(r2, 503, { type: 'server_error', code: 'device_lost' });
  assert.ok(!r2.body.includes('secret'));
});

test('5xx bodies hide internals: unexpected errors are "internal server error"', async (t) => {
  const text = await testText();
  const app = await testApp(
    t,
    await FakeEngine.story(text, { submitError: new Error('TypeError at /work/main/engine/secret.ts:42') }),
  );
  const r = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
  const e = assertError(r, 500, { type: 'server_error', code: 'internal', param: null });
  assert.equal(e.message, 'internal server error');
  assert.ok(!r.body.includes('secret'));
  const app2 = await testApp(
    t,
    await FakeEngine.story(text, {
      submitError: new SiftError('GPU_LIMIT', 'buffer of 9 GiB exceeds maxBufferSize at /secret'),
    }),
  );
  const r2 = await app2.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
  const e2 = assertError(r2, 500, { type: 'server_error', code: 'gpu_limit', param: null });
  assert.equal(e2.message, 'internal server error');
  assert.ok(!r2.body.includes('secret'));
});
