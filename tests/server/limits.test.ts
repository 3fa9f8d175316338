/**
 * Limits and edge inputs that must give a clear answer, never a misleading one: nulls for every optional field,
 * the token budget's upper bound, bodies declared in a charset other than UTF-8 (415), a KV cache smaller than the
 * context (400 up front, max_tokens defaults within the cache), and /health while the model loads (an expected
 * state: no error-level log line per poll).
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { buildApp } from '../../server/app.js';
import { loadText } from '../../text/text.js';
import { STORY, storyTextDir } from '../helpers/tiny-text.js';
import { FakeEngine } from './fake-engine.js';
import { cfg, testApp, testText } from './helpers.js';

const chat = (extra: Record<string, unknown> = {}) => ({
  model: 'fake-model',
  messages: [{ role: 'user', content: 'Hello' }],
  max_tokens: 4,
  temperature: 0,
  ...extra,
});

test('null is "not given" for every optional field, attention and user included', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  const common = {
    max_tokens: null,
    temperature: null,
    top_p: null,
    top_k: null,
    seed: null,
    stop: null,
    n: null,
    presence_penalty: null,
    frequency_penalty: null,
    stream: null,
    stream_options: null,
    user: null,
    attention: null,
  };
  const c = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: {
      ...chat(),
      ...common,
      max_tokens: 3,
      max_completion_tokens: null,
      logprobs: null,
      top_logprobs: null,
    },
  });
  assert.equal(c.statusCode, 200, c.body);
  assert.equal(fake.submitted.at(-1)?.attention, undefined);
  const p = await app.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { model: 'fake-model', prompt: 'x', ...common, logprobs: null },
  });
  assert.equal(p.statusCode, 200, p.body);
  assert.equal(fake.submitted.at(-1)?.maxTokens, 16, 'completions default');
  const budget = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ attention: { mode: 'sparse', token_budget: null } }),
  });
  assert.equal(budget.statusCode, 200, budget.body);
  assert.deepEqual(fake.submitted.at(-1)?.attention, { mode: 'sparse', tokenBudget: undefined });
});

test('attention.token_budget has an upper bound (2^24, the config limit)', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  const post = (token_budget: unknown) =>
    app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: chat({ attention: { mode: 'sparse', token_budget } }),
    });
  for (const bad of [2 ** 24 + 1, 1e300, Number.MAX_SAFE_INTEGER]) {
    const r = await post(bad);
    assert.equal(r.statusCode, 400, `${bad}`);
    assert.equal(r.json().error.param, 'attention.token_budget');
    assert.match(r.json().error.message, /must be <= 16777216/);
  }
  assert.equal((await post(2 ** 24)).statusCode, 200);
  assert.equal(fake.submitted.at(-1)?.attention?.tokenBudget, 2 ** 24);
});

test('415 for a body declared in a charset other than UTF-8', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  const post = (contentType: string) =>
    app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: { 'content-type': contentType },
      payload: JSON.stringify(chat()),
    });
  for (const ct of [
    'application/json; charset=iso-8859-1',
    'application/json;charset="latin1"',
    'application/json; charset=UTF-16',
  ]) {
    const r = await post(ct);
    assert.equal(r.statusCode, 415, ct);
    const e = r.json().error;
    assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(e.type, 'invalid_request_error');
    assert.equal(e.code, 'unsupported_media_type');
    assert.match(e.message, /UTF-8/);
  }
  assert.equal(fake.submitted.length, 0);
  for (const ct of ['application/json', 'application/json; charset=utf-8', 'application/json; charset="UTF8"']) {
    assert.equal((await post(ct)).statusCode, 200, ct);
  }
});

test('a KV cache smaller than the context: 400 up front, and max_tokens defaults within the cache', async (t) => {
  const text = await testText();
  // the case: stories15M with --kv-cache-mib 1 holds 128 tokens under a 256-token context
  const fake = await FakeEngine.story(text, { maxContext: 256, kvCacheTokens: 128 });
  const app = await testApp(t, fake);
  const ids = Array.from({ length: 100 }, (_, i) => 300 + i);
  const r = await app.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { model: 'fake-model', prompt: ids, max_tokens: 100 },
  });
  assert.equal(r.statusCode, 400);
  const e = r.json().error;
  assert.equal(e.code, 'context_length_exceeded');
  assert.equal(e.param, 'max_tokens');
  assert.match(e.message, /KV cache of this server holds 128 tokens per request/);
  assert.equal(fake.submitted.length, 0);
  // The chat default (the rest of the context) is the rest of what the cache holds.
  const c = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ max_tokens: null }) });
  assert.equal(c.statusCode, 200);
  const q = fake.submitted.at(-1);
  assert.ok(q);
  assert.equal(q.promptIds.length + q.maxTokens, 128);
  const fits = await app.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { model: 'fake-model', prompt: ids, max_tokens: 28 },
  });
  assert.equal(fits.statusCode, 200);
  assert.equal(fits.json().choices[0].finish_reason, 'length');
  assert.equal(fits.json().usage.completion_tokens, 28);
});

test('/health while the model loads: 503 with an OpenAI body, and no error-level log line per poll', async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  const app = await buildApp({ engine: null, text: null, config: cfg(), logger: pino({ level: 'trace' }, sink) });
  t.after(() => app.close());
  for (let i = 0; i < 3; i++) {
    const h = await app.inject({ method: 'GET', url: '/health' });
    assert.equal(h.statusCode, 503);
    assert.equal(h.json().error.code, 'not_ready');
    assert.equal(h.json().error.type, 'server_error');
  }
  // a generation request meanwhile is an expected 503 too: logged, but not as an error with a stack
  const g = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
  assert.equal(g.statusCode, 503);
  assert.ok(lines.length > 0, 'the logger saw the requests');
  const loud = lines.filter((l) => (l.level as number) >= 40 || 'err' in l);
  assert.deepEqual(loud, []);
});

test('a 7.5 MB prompt is refused from its length before tokenizing: 400 naming the field', async (t) => {
  const text = await testText();
  const fake = await FakeEngine.story(text, { maxContext: 256 });
  const app = await testApp(t, fake);
  const calls: number[] = [];
  const encode = text.tokenizer.encode.bind(text.tokenizer);
  text.tokenizer.encode = (s, o) => {
    calls.push(s.length);
    return encode(s, o);
  };
  t.after(() => {
    text.tokenizer.encode = encode;
  });
  const huge = 'Once upon a time, there was a little girl. '.repeat(175_000); // 7.5 MB
  const chatR = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ messages: [{ role: 'user', content: huge }] }),
  });
  assert.equal(chatR.statusCode, 400);
  assert.deepEqual([chatR.json().error.code, chatR.json().error.param], ['context_length_exceeded', 'messages']);
  assert.match(chatR.json().error.message, /maximum context length is 256 tokens; the prompt has \d+ characters/);
  for (const prompt of [huge, ['Hi', huge]]) {
    const r = await app.inject({ method: 'POST', url: '/v1/completions', payload: { model: 'fake-model', prompt } });
    assert.equal(r.statusCode, 400);
    assert.deepEqual([r.json().error.code, r.json().error.param], ['context_length_exceeded', 'prompt']);
  }
  assert.deepEqual(
    calls.filter((n) => n > 1000),
    [],
    'nothing big was tokenized',
  );
  assert.equal(fake.submitted.length, 0);
});

test('a big prompt that fits a long context is tokenized off the main thread, same ids as inline', async (t) => {
  const text = loadText(storyTextDir());
  t.after(() => text.close());
  const inline = loadText(storyTextDir(), { worker: false });
  const fake = await FakeEngine.story(text, { maxContext: 1 << 20 });
  const app = await testApp(t, fake, { text });
  const big = `${STORY} `.repeat(1000); // 140 k characters
  const r = await app.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { model: 'fake-model', prompt: big, max_tokens: 2 },
  });
  assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual(fake.submitted[0].promptIds, await inline.encodePrompt(big));
});
