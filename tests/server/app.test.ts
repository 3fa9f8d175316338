/** The OpenAI shapes of every route, through app.inject against the deterministic fake engine. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { attentionConfig } from '../../config/attention.js';
import { buildApp } from '../../server/app.js';
import { storyText } from '../helpers/tiny-text.js';
import { FakeEngine, STORY } from './fake-engine.js';
import { cfg, lastEvent, parseSse, streamedText, testApp, testText } from './helpers.js';

const chat = (extra: Record<string, unknown> = {}) => ({
  model: 'fake-model',
  messages: [{ role: 'user', content: 'Tell me a story.' }],
  max_tokens: 8,
  temperature: 0,
  ...extra,
});

/** The fake's greedy text for `k` tokens after the prompt of the first request the fake saw. */
async function greedyText(k: number, fake: FakeEngine): Promise<string> {
  const text = await testText();
  const ids = await text.tokenizer.encode(STORY, { addBos: false });
  const d = text.stream(fake.submitted[0].promptIds);
  return (
    ids
      .slice(0, k)
      .map((id) => d.push(id).text)
      .join('') + d.finish().text
  );
}

test('chat completion: OpenAI shape, usage with cached tokens and attention, x-request-id', async (t) => {
  const text = await testText();
  const fake = await FakeEngine.story(text);
  const app = await testApp(t, fake);
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ attention: { mode: 'sparse', token_budget: 128 } }),
    headers: { 'x-request-id': 'req-abc' },
  });
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.headers['x-request-id'], 'req-abc');
  const b = r.json();
  assert.match(b.id, /^chatcmpl-[0-9a-f]{32}$/);
  assert.equal(b.object, 'chat.completion');
  assert.equal(typeof b.created, 'number');
  assert.equal(b.model, 'fake-model');
  assert.equal(b.choices.length, 1);
  const c = b.choices[0];
  assert.deepEqual(Object.keys(c).sort(), ['finish_reason', 'index', 'logprobs', 'message']);
  assert.equal(c.index, 0);
  assert.equal(c.message.role, 'assistant');
  assert.equal(c.message.content, await greedyText(8, fake));
  assert.equal(c.finish_reason, 'length');
  assert.equal(c.logprobs, null);
  const prompt = fake.submitted[0].promptIds.length;
  assert.deepEqual(b.usage, {
    prompt_tokens: prompt,
    completion_tokens: 8,
    total_tokens: prompt + 8,
    prompt_tokens_details: { cached_tokens: 0 },
    attention: {
      mode: 'sparse',
      requested_mode: 'sparse',
      mean_tokens_attended: prompt + 4,
      mean_context_tokens: prompt + 4,
      prefill_key_blocks_skipped_share: null,
    },
  });
  const req = fake.submitted[0];
  assert.deepEqual(req.attention, { mode: 'sparse', tokenBudget: 128 });
  assert.equal(req.maxTokens, 8);
  assert.deepEqual(req.sampling, { temperature: 0, topP: 1, topK: 0, seed: null });
  assert.deepEqual(req.stopIds, text.stopIds);
  assert.match(req.id, /^req-abc#/);
});

test('generated request ids are UUIDs; bad X-Request-Id values are replaced', async (t) => {
  const app = await testApp(t, await FakeEngine.story(await testText()));
  const r = await app.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'bad id\twith spaces' } });
  assert.match(String(r.headers['x-request-id']), /^[0-9a-f-]{36}$/);
});

test('request fields reach the engine: max_completion_tokens, top_p, top_k, penalties, timeout', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake, { config: cfg({ requestTimeoutMs: 60000 }) });
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({
      max_tokens: 50,
      max_completion_tokens: 3,
      temperature: 0.7,
      top_p: 0.9,
      top_k: 40,
      seed: 11,
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      user: 'u1',
    }),
  });
  assert.equal(r.statusCode, 200, r.body);
  const req = fake.submitted[0];
  assert.equal(req.maxTokens, 3);
  assert.deepEqual(req.sampling, { temperature: 0.7, topP: 0.9, topK: 40, seed: 11 });
  assert.equal(req.presencePenalty, 0.5);
  assert.equal(req.frequencyPenalty, -0.5);
  assert.equal(req.timeoutMs, 60000);
  assert.equal(r.json().usage.completion_tokens, 3);
});

test('max_tokens defaults to the rest of the context', async (t) => {
  const fake = await FakeEngine.story(await testText(), { maxContext: 40 });
  const app = await testApp(t, fake);
  const r = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ max_tokens: undefined }) });
  assert.equal(r.statusCode, 200, r.body);
  const req = fake.submitted[0];
  assert.equal(req.maxTokens, 40 - req.promptIds.length);
  assert.equal(r.json().choices[0].finish_reason, 'length');
});

test('n > 1: independent requests with seeds seed, seed+1, ...; choices indexed', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ n: 3, seed: 5, temperature: 1 }),
  });
  assert.equal(r.statusCode, 200, r.body);
  const b = r.json();
  assert.deepEqual(
    b.choices.map((c: { index: number }) => c.index),
    [0, 1, 2],
  );
  assert.deepEqual(
    fake.submitted.map((q) => q.sampling.seed),
    [5, 6, 7],
  );
  assert.equal(new Set(b.choices.map((c: { message: { content: string } }) => c.message.content)).size, 3);
  assert.equal(b.usage.prompt_tokens, fake.submitted[0].promptIds.length, 'the prompt counts once');
  assert.equal(b.usage.completion_tokens, 24);
  // Same seed, same text.
  const again = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ seed: 6, temperature: 1 }),
  });
  assert.equal(again.json().choices[0].message.content, b.choices[1].message.content);
});

test('stop strings: matched on text, not included, request cancelled, finish_reason stop', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ max_tokens: 1 }) });
  const full = await greedyText(30, fake);
  for (const stop of ['little', ['zzz', ' named', 'girl']]) {
    const r = await app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: chat({ max_tokens: 30, stop }),
    });
    const c = r.json().choices[0];
    const first = Math.min(...[stop].flat().map((s) => (full.indexOf(s) === -1 ? Infinity : full.indexOf(s))));
    assert.equal(c.message.content, full.slice(0, first));
    assert.equal(c.finish_reason, 'stop');
    assert.ok(fake.cancelled.has(fake.submitted.at(-1)?.id ?? ''));
  }
  // A stop string that never appears changes nothing.
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ max_tokens: 30, stop: 'xyzzy' }),
  });
  assert.equal(r.json().choices[0].message.content, full);
  assert.equal(r.json().choices[0].finish_reason, 'length');
});

test('a stop id from the engine gives finish_reason stop', async (t) => {
  const text = await testText();
  const fake = await FakeEngine.story(text);
  fake.opts.script.splice(5, 0, text.stopIds[0]);
  const app = await testApp(t, fake);
  const r = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ max_tokens: 30 }) });
  assert.equal(r.json().choices[0].finish_reason, 'stop');
  assert.equal(r.json().usage.completion_tokens, 5);
});

test('streaming chat: role chunk, content deltas, finish chunk, usage chunk, [DONE]', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ stream: true, stream_options: { include_usage: true } }),
    headers: { 'x-request-id': 'sse-1' },
  });
  assert.equal(r.statusCode, 200);
  assert.match(String(r.headers['content-type']), /^text\/event-stream/);
  assert.equal(r.headers['x-request-id'], 'sse-1');
  const s = parseSse(r.body);
  assert.ok(s.done);
  const ev = s.events;
  const id = ev[0].id;
  for (const e of ev) {
    assert.equal(e.id, id);
    assert.equal(e.object, 'chat.completion.chunk');
    assert.equal(e.model, 'fake-model');
  }
  assert.deepEqual(ev[0].choices, [
    { index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null },
  ]);
  assert.equal(ev[0].usage, null);
  const last = ev.at(-1) as Record<string, unknown>;
  assert.deepEqual(last.choices, []);
  assert.equal((last.usage as { completion_tokens: number }).completion_tokens, 8);
  assert.deepEqual((ev.at(-2) as Record<string, unknown>).choices, [
    { index: 0, delta: {}, logprobs: null, finish_reason: 'length' },
  ]);
  assert.equal(streamedText(ev).get(0), await greedyText(8, fake));
  // Without include_usage: no usage field, no usage chunk.
  const r2 = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ stream: true }) });
  const s2 = parseSse(r2.body);
  assert.ok(s2.events.every((e) => !('usage' in e)));
  assert.equal(lastEvent(s2).choices.length, 1);
});

test('streaming with stop strings never sends part of the stop string', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ max_tokens: 30, stream: true, stop: ['girl named'] }),
  });
  const full = await greedyText(30, fake);
  const s = parseSse(r.body);
  assert.equal(streamedText(s.events).get(0), full.slice(0, full.indexOf('girl named')));
  assert.equal(lastEvent(s).choices[0].finish_reason, 'stop');
});

test('streaming n > 1: every choice gets its role chunk, deltas and finish', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ n: 2, seed: 1, temperature: 1, stream: true }),
  });
  const s = parseSse(r.body);
  const byChoice = streamedText(s.events);
  assert.deepEqual([...byChoice.keys()].sort(), [0, 1]);
  const nonStream = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ n: 2, seed: 1, temperature: 1 }),
  });
  const b = nonStream.json();
  assert.equal(byChoice.get(0), b.choices[0].message.content);
  assert.equal(byChoice.get(1), b.choices[1].message.content);
  const finishes = s.events.flatMap((e) =>
    (e.choices as Array<{ index: number; finish_reason: string | null }>).filter((c) => c.finish_reason),
  );
  assert.deepEqual(finishes.map((c) => c.index).sort(), [0, 1]);
});

test('chat logprobs: content entries with token, logprob, bytes and top_logprobs', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ max_tokens: 4, logprobs: true, top_logprobs: 2 }),
  });
  const c = r.json().choices[0];
  assert.equal(c.logprobs.content.length, 4);
  const e = c.logprobs.content[0];
  assert.deepEqual(Object.keys(e).sort(), ['bytes', 'logprob', 'token', 'top_logprobs']);
  assert.equal(e.token, ' Once');
  assert.deepEqual(e.bytes, [...Buffer.from(' Once')]);
  assert.equal(e.top_logprobs.length, 2);
  assert.equal(e.top_logprobs[0].token, ' Once');
  assert.equal(c.logprobs.content.map((x: { token: string }) => x.token).join(''), c.message.content);
  assert.equal(fake.submitted[0].topLogprobs, 2);
  // logprobs without top_logprobs asks the engine for 0 alternatives.
  await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ logprobs: true }) });
  assert.equal(fake.submitted[1].topLogprobs, 0);
});

test('completions: prompt string, list of strings, token ids, list of token-id lists; logprobs shape', async (t) => {
  const text = await testText();
  const fake = await FakeEngine.story(text);
  const app = await testApp(t, fake);
  const post = (payload: Record<string, unknown>) =>
    app.inject({
      method: 'POST',
      url: '/v1/completions',
      payload: { model: 'fake-model', max_tokens: 5, temperature: 0, ...payload },
    });
  const a = await post({ prompt: 'Once upon a time' });
  assert.equal(a.statusCode, 200, a.body);
  const b = a.json();
  assert.match(b.id, /^cmpl-/);
  assert.equal(b.object, 'text_completion');
  assert.deepEqual(Object.keys(b.choices[0]).sort(), ['finish_reason', 'index', 'logprobs', 'text']);
  assert.deepEqual(fake.submitted[0].promptIds, await text.encodePrompt('Once upon a time'));
  assert.equal(b.usage.prompt_tokens, 5);

  const many = (await post({ prompt: ['a', 'b c'], n: 2 })).json();
  assert.deepEqual(
    many.choices.map((c: { index: number }) => c.index),
    [0, 1, 2, 3],
  );
  assert.equal(
    many.usage.prompt_tokens,
    (await text.encodePrompt('a')).length + (await text.encodePrompt('b c')).length,
  );

  await post({ prompt: [1, 300, 301] });
  assert.deepEqual(fake.submitted.at(-1)?.promptIds, [1, 300, 301]);
  const lists = (
    await post({
      prompt: [
        [1, 300],
        [1, 301, 302],
      ],
    })
  ).json();
  assert.equal(lists.choices.length, 2);
  assert.deepEqual(
    fake.submitted.slice(-2).map((q) => q.promptIds),
    [
      [1, 300],
      [1, 301, 302],
    ],
  );

  const lp = (await post({ prompt: 'Once', logprobs: 2 })).json().choices[0];
  assert.equal(lp.logprobs.tokens.length, 5);
  assert.equal(lp.logprobs.token_logprobs.length, 5);
  assert.equal(Object.keys(lp.logprobs.top_logprobs[0]).length, 2);
  assert.equal(lp.logprobs.text_offset[0], 0);
  assert.equal(lp.logprobs.tokens.join(''), lp.text);

  const bad = await post({ prompt: [1, 999999] });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.param, 'prompt[1]');
});

test('streaming completions: text chunks, finish chunk, usage, [DONE]', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  const r = await app.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: {
      model: 'fake-model',
      prompt: 'Hi',
      max_tokens: 6,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    },
  });
  const s = parseSse(r.body);
  assert.ok(s.done);
  assert.ok(s.events.every((e) => e.object === 'text_completion'));
  const nonStream = await app.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { model: 'fake-model', prompt: 'Hi', max_tokens: 6, temperature: 0 },
  });
  assert.equal(streamedText(s.events).get(0), nonStream.json().choices[0].text);
  assert.equal(lastEvent(s).usage?.completion_tokens, 6);
});

test('keep-alive comments while the engine is prefilling', async (t) => {
  const fake = await FakeEngine.story(await testText(), { prefillMs: 120, progressMs: 10 });
  const app = await testApp(t, fake, { config: cfg({ keepAliveMs: 5 }) });
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ stream: true, max_tokens: 2 }),
  });
  const s = parseSse(r.body);
  assert.ok(s.comments >= 3, `only ${s.comments} keep-alive comments`);
  assert.ok(r.body.includes(': keep-alive\n\n'));
  assert.ok(s.done);
});

test('engine timeout: what was generated, finish_reason timeout (never length)', async (t) => {
  const fake = await FakeEngine.story(await testText(), { tokenMs: 5 });
  const app = await testApp(t, fake, { config: cfg({ requestTimeoutMs: 30 }) });
  const r = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ max_tokens: 200 }) });
  assert.equal(r.statusCode, 200);
  const b = r.json();
  assert.equal(b.choices[0].finish_reason, 'timeout');
  assert.ok(b.usage.completion_tokens > 0 && b.usage.completion_tokens < 200);
  const s = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ max_tokens: 200, stream: true }),
  });
  assert.equal(lastEvent(parseSse(s.body)).choices[0].finish_reason, 'timeout');
});

test('GET /v1/models and /health once ready; 503 while the model loads', async (t) => {
  const text = await testText();
  const app = await testApp(t, null, { text: null });
  const h = await app.inject({ method: 'GET', url: '/health' });
  assert.equal(h.statusCode, 503);
  assert.equal(h.json().error.code, 'not_ready');
  const m503 = await app.inject({ method: 'GET', url: '/v1/models' });
  assert.equal(m503.statusCode, 503);
  const c503 = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
  assert.equal(c503.statusCode, 503);
  assert.deepEqual(c503.json(), {
    error: {
      message: 'the model is still loading; retry shortly',
      type: 'server_error',
      param: null,
      code: 'not_ready',
    },
  });

  const settings = {
    adapter: 'llvmpipe (LLVM 15.0.6, 256 bits)',
    attention: {
      mode: 'sparse' as const,
      token_budget: 4096,
      page_size: 64,
      prefill_mode: 'dense' as const,
      streaming_head_share: 0,
      sink: 128,
      local: 256,
    },
    prefix_cache: true,
  };
  app.sift.state.ready(await FakeEngine.story(text, { maxContext: 256 }), text, settings);
  const ok = await app.inject({ method: 'GET', url: '/health' });
  assert.equal(ok.statusCode, 200);
  assert.deepEqual(ok.json(), { status: 'ok', model: 'fake-model' });
  const m = await app.inject({ method: 'GET', url: '/v1/models' });
  assert.equal(m.statusCode, 200);
  const list = m.json();
  assert.equal(list.object, 'list');
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].id, 'fake-model');
  assert.equal(list.data[0].object, 'model');
  assert.equal(list.data[0].owned_by, 'sift');
  assert.equal(list.data[0].max_model_len, 256);
  // how the model is served, for load-test reports
  assert.deepEqual(list.data[0].sift, settings);
});

test('GET /metrics: sift: names, per-request figures and engine stats', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ attention: { mode: 'sparse' } }) });
  await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ stop: 'little', max_tokens: 30, attention: { mode: 'dense' } }),
  });
  const r = await app.inject({ method: 'GET', url: '/metrics' });
  assert.equal(r.statusCode, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain/);
  const body = r.body;
  for (const name of [
    'time_to_first_token_seconds',
    'time_per_output_token_seconds',
    'e2e_request_latency_seconds',
    'num_requests_running',
    'num_requests_waiting',
    'kv_cache_usage_perc',
    'prompt_tokens_total',
    'generation_tokens_total',
    'num_preemptions_total',
    'prefix_cache_queries_total',
    'prefix_cache_hits_total',
    'request_success_total',
    'attention_kv_attended_share',
    'attention_selection_reuse_share',
    'attention_streaming_head_share',
    'attention_prefill_key_blocks_skipped_share',
    'prefix_cache_enabled',
    'attention_mode_requests_total',
  ]) {
    assert.ok(body.includes(`# TYPE sift:${name} `), `missing sift:${name}`);
  }
  assert.match(body, /sift:request_success_total\{finished_reason="length"\} 1/);
  assert.match(body, /sift:request_success_total\{finished_reason="stop"\} 1/);
  assert.match(body, /sift:attention_mode_requests_total\{mode="sparse"\} 1/);
  assert.match(body, /sift:attention_mode_requests_total\{mode="dense"\} 1/);
  assert.match(body, /sift:e2e_request_latency_seconds_count 2/);
  assert.match(body, new RegExp(`sift:generation_tokens_total ${fake.stats().generationTokens}\\b`));
  assert.match(body, /sift:num_requests_running 0/);
});

test('one default attention mode: the attention config decides it, for usage and for failed requests alike', async (t) => {
  const configured = attentionConfig().mode as 'dense' | 'sparse';
  const other = configured === 'sparse' ? 'dense' : 'sparse';
  /** One request that succeeds, then one the engine fails after a token (the server never sees its mode). */
  const modes = async (app: FastifyInstance, engineMode?: 'dense' | 'sparse') => {
    const text = storyText();
    app.sift.state.ready(await FakeEngine.story(text, { attentionMode: engineMode }), text);
    const ok = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
    const boom = { tokens: 1, error: new Error('boom') };
    app.sift.state.ready(await FakeEngine.story(text, { attentionMode: engineMode, failAfter: boom }), text);
    const failed = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
    assert.equal(failed.statusCode, 500);
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    const count = (m: string) =>
      Number(new RegExp(`attention_mode_requests_total\\{mode="${m}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
    return { usage: ok.json().usage.attention.mode, counted: { dense: count('dense'), sparse: count('sparse') } };
  };
  const byDefault = await modes(await testApp(t, null));
  assert.equal(byDefault.usage, configured);
  assert.deepEqual(byDefault.counted, { [configured]: 2, [other]: 0 });
  const app = await buildApp({ engine: null, text: null, config: cfg(), attentionMode: other });
  t.after(() => app.close());
  const chosen = await modes(app, other);
  assert.equal(chosen.usage, other);
  assert.deepEqual(chosen.counted, { [other]: 2, [configured]: 0 });
});
