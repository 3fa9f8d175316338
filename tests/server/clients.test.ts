/**
 * What today's clients send after plain chat, through app.inject against the fake engine (which samples within a
 * constraint's mask, as the engine does): response_format json_object / json_schema (always parses and validates;
 * unsupported keywords and too-small limits refused by name), tools with tool_choice required / named / auto
 * (message.tool_calls, streamed delta.tool_calls, finish_reason tool_calls), logit_bias / min_p /
 * repetition_penalty reaching the engine, unknown fields logged by name, GET /v1/models/{id}, /tokenize and
 * /detokenize, CORS.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { pino } from 'pino';
import { buildApp } from '../../server/app.js';
import { parseToolOutput } from '../../server/tools.js';
import { refSchema } from '../helpers/json-schemas.js';
import { FakeEngine } from './fake-engine.js';
import { cfg, parseSse, testApp, testText } from './helpers.js';

const chat = (extra: Record<string, unknown> = {}) => ({
  model: 'fake-model',
  messages: [{ role: 'user', content: 'Tell me a story.' }],
  temperature: 0,
  ...extra,
});

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'the weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['c', 'f'] } },
      required: ['city', 'unit'],
      additionalProperties: false,
    },
  },
};
const time = {
  type: 'function',
  function: { name: 'get_time', parameters: { type: 'object', properties: {}, additionalProperties: false } },
};

test('response_format json_schema and json_object: content parses and validates', async (t) => {
  const text = await testText();
  const app = await testApp(t, await FakeEngine.story(text));
  const schema = refSchema();
  for (const seed of [1, 2, 3]) {
    const r = await app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: chat({
        temperature: 1,
        seed,
        max_tokens: 80,
        response_format: { type: 'json_schema', json_schema: { name: 'line', schema, strict: true } },
      }),
    });
    assert.equal(r.statusCode, 200, r.body);
    const c = r.json().choices[0];
    assert.equal(c.finish_reason, 'stop');
    const v = JSON.parse(c.message.content);
    assert.ok(new Ajv2020({ strict: false }).validate(schema, v), c.message.content);
  }
  const o = await app.inject({
    method: 'POST',
    url: '/v1/completions',
    payload: { model: 'fake-model', prompt: 'Once', max_tokens: 40, response_format: { type: 'json_object' } },
  });
  assert.equal(o.statusCode, 200, o.body);
  const v = JSON.parse(o.json().choices[0].text);
  assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v));
});

test('unsupported schema keywords, bad logit_bias keys and limits too small are 400s naming the field', async (t) => {
  const text = await testText();
  const fake = await FakeEngine.story(text);
  const app = await testApp(t, fake);
  const post = (payload: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/v1/chat/completions', payload });
  const bad = await post(
    chat({
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'x', schema: { type: 'array', items: { type: 'string' }, uniqueItems: true } },
      },
    }),
  );
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.param, 'response_format.json_schema.schema');
  assert.match(bad.json().error.message, /uniqueItems/);
  const small = await post(
    chat({ max_tokens: 3, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: refSchema() } } }),
  );
  assert.equal(small.statusCode, 400);
  assert.equal(small.json().error.param, 'max_tokens');
  assert.match(small.json().error.message, /shortest output/);
  const key = await post(chat({ logit_bias: { abc: 5 } }));
  assert.equal(key.statusCode, 400);
  assert.equal(key.json().error.param, 'logit_bias');
  const range = await post(chat({ logit_bias: { 5: 101 } }));
  assert.equal(range.statusCode, 400);
  const vocab = await post(chat({ logit_bias: { 999999: 1 } }));
  assert.equal(vocab.statusCode, 400);
  assert.equal(vocab.json().error.param, 'logit_bias.999999');
  const tools = await post(chat({ tools: [weather], tool_choice: { type: 'function', function: { name: 'nope' } } }));
  assert.equal(tools.statusCode, 400);
  assert.equal(tools.json().error.param, 'tool_choice.function.name');
  assert.equal(fake.submitted.length, 0, 'nothing reached the engine');
});

test('logit_bias, min_p, repetition_penalty reach the engine; unknown fields are logged once by name', async (t) => {
  const text = await testText();
  const fake = await FakeEngine.story(text);
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      cb();
    },
  });
  const app = await buildApp({ engine: fake, text, config: cfg(), logger: pino({ level: 'info' }, sink) });
  t.after(() => app.close());
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({
      max_tokens: 4,
      logit_bias: { 7: -100, 12: 2.5 },
      min_p: 0.1,
      repetition_penalty: 1.3,
      store: true,
      metadata: { a: 1 },
    }),
  });
  assert.equal(r.statusCode, 200, r.body);
  const req = fake.submitted[0];
  assert.deepEqual(
    [...(req.logitBias ?? [])],
    [
      [7, -100],
      [12, 2.5],
    ],
  );
  assert.equal(req.minP, 0.1);
  assert.equal(req.repetitionPenalty, 1.3);
  const warns = lines.filter((l) => l.level === 40);
  assert.equal(warns.length, 1, JSON.stringify(lines));
  assert.deepEqual(warns[0].fields, ['store', 'metadata']);
  assert.match(String(warns[0].msg), /store, metadata/);
});

test('tool_choice required and named: message.tool_calls with OpenAI ids, finish_reason tool_calls', async (t) => {
  const text = await testText();
  const app = await testApp(t, await FakeEngine.story(text));
  for (const tool_choice of ['required', { type: 'function', function: { name: 'get_weather' } }]) {
    const r = await app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: chat({ tools: [weather, time], tool_choice, temperature: 1, seed: 4 }),
    });
    assert.equal(r.statusCode, 200, r.body);
    const c = r.json().choices[0];
    assert.equal(c.finish_reason, 'tool_calls');
    assert.equal(c.message.content, null);
    assert.ok(c.message.tool_calls.length >= 1);
    for (const call of c.message.tool_calls) {
      assert.match(call.id, /^call_[A-Za-z0-9]{24}$/);
      assert.equal(call.type, 'function');
      assert.ok(['get_weather', 'get_time'].includes(call.function.name));
      const args = JSON.parse(call.function.arguments);
      if (call.function.name === 'get_weather') {
        assert.equal(typeof args.city, 'string');
        assert.ok(['c', 'f'].includes(args.unit));
      }
    }
    if (typeof tool_choice !== 'string') {
      assert.equal(c.message.tool_calls.length, 1);
      assert.equal(c.message.tool_calls[0].function.name, 'get_weather');
    }
  }
});

test('streamed tool call: one delta.tool_calls with id, name and arguments, then finish_reason tool_calls', async (t) => {
  const text = await testText();
  const app = await testApp(t, await FakeEngine.story(text));
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ tools: [weather], tool_choice: 'required', stream: true }),
  });
  assert.equal(r.statusCode, 200);
  const s = parseSse(r.body);
  assert.ok(s.done);
  const deltas = s.events.map((e) => (e.choices as Array<Record<string, unknown>>)[0]);
  const withCalls = deltas.filter((d) => (d.delta as { tool_calls?: unknown }).tool_calls);
  assert.equal(withCalls.length, 1);
  const calls = (withCalls[0].delta as { tool_calls: Array<Record<string, unknown>> }).tool_calls;
  assert.equal(calls[0].index, 0);
  assert.match(String(calls[0].id), /^call_/);
  const fn = calls[0].function as { name: string; arguments: string };
  assert.equal(fn.name, 'get_weather');
  assert.equal(typeof JSON.parse(fn.arguments).city, 'string');
  assert.ok(!deltas.some((d) => (d.delta as { content?: string }).content), 'no content deltas');
  assert.equal(deltas.at(-1)?.finish_reason, 'tool_calls');
});

test('tool_choice auto: plain text stays content; Hermes and bare JSON calls are read as tool calls', async (t) => {
  const text = await testText();
  const app = await testApp(t, await FakeEngine.story(text));
  const r = await app.inject({
    method: 'POST',
    url: '/v1/chat/completions',
    payload: chat({ tools: [weather], max_tokens: 6 }),
  });
  const c = r.json().choices[0];
  assert.equal(c.finish_reason, 'length');
  assert.equal(typeof c.message.content, 'string');
  assert.equal(c.message.tool_calls, undefined);
  const mode = { kind: 'auto' as const, tools: [weather as never] };
  const h = parseToolOutput('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>', mode);
  assert.equal(h.content, null);
  assert.deepEqual(JSON.parse(h.calls[0].function.arguments), { city: 'Oslo' });
  const j = parseToolOutput(' {"name": "get_weather", "parameters": {"city": "Rome"}}', mode);
  assert.equal(j.calls[0].function.name, 'get_weather');
  assert.equal(parseToolOutput('{"name": "unknown_tool", "arguments": {}}', mode).calls.length, 0);
  assert.equal(parseToolOutput('It is sunny.', mode).content, 'It is sunny.');
});

test('GET /v1/models/{id}; /tokenize and /detokenize in llama-server shapes', async (t) => {
  const text = await testText();
  const app = await testApp(t, await FakeEngine.story(text));
  const m = await app.inject({ method: 'GET', url: '/v1/models/fake-model' });
  assert.equal(m.statusCode, 200);
  assert.equal(m.json().id, 'fake-model');
  assert.equal(m.json().object, 'model');
  const no = await app.inject({ method: 'GET', url: '/v1/models/other' });
  assert.equal(no.statusCode, 404);
  assert.equal(no.json().error.code, 'model_not_found');
  const tok = await app.inject({ method: 'POST', url: '/tokenize', payload: { content: 'Once upon a time' } });
  assert.deepEqual(tok.json().tokens, await text.tokenizer.encode('Once upon a time', { addBos: false }));
  const bos = await app.inject({ method: 'POST', url: '/tokenize', payload: { content: 'Once', add_special: true } });
  assert.equal(bos.json().tokens[0], text.tokenizer.bosId);
  const pieces = await app.inject({
    method: 'POST',
    url: '/tokenize',
    payload: { content: 'Once upon', with_pieces: true },
  });
  assert.equal(
    pieces
      .json()
      .tokens.map((p: { piece: string }) => p.piece)
      .join(''),
    ' Once upon',
  );
  const de = await app.inject({ method: 'POST', url: '/detokenize', payload: { tokens: tok.json().tokens } });
  assert.deepEqual(de.json(), { content: 'Once upon a time' });
  const bad = await app.inject({ method: 'POST', url: '/detokenize', payload: { tokens: [5, 10 ** 7] } });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.param, 'tokens[1]');
});

test('CORS: off by default; --allowed-origins answers preflights before auth and tags responses', async (t) => {
  const text = await testText();
  const plain = await testApp(t, await FakeEngine.story(text));
  const r0 = await plain.inject({ method: 'GET', url: '/v1/models', headers: { origin: 'http://a.example' } });
  assert.equal(r0.headers['access-control-allow-origin'], undefined);
  const app = await testApp(t, await FakeEngine.story(text), {
    config: cfg({ allowedOrigins: 'http://a.example', apiKeys: 'k1' }),
  });
  const pre = await app.inject({
    method: 'OPTIONS',
    url: '/v1/chat/completions',
    headers: {
      origin: 'http://a.example',
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization,content-type',
    },
  });
  assert.equal(pre.statusCode, 204);
  assert.equal(pre.headers['access-control-allow-origin'], 'http://a.example');
  assert.match(String(pre.headers['access-control-allow-headers']), /authorization/i);
  const get = await app.inject({
    method: 'GET',
    url: '/v1/models',
    headers: { origin: 'http://a.example', authorization: 'Bearer k1' },
  });
  assert.equal(get.statusCode, 200);
  assert.equal(get.headers['access-control-allow-origin'], 'http://a.example');
  const other = await app.inject({
    method: 'GET',
    url: '/v1/models',
    headers: { origin: 'http://b.example', authorization: 'Bearer k1' },
  });
  assert.notEqual(other.headers['access-control-allow-origin'], 'http://b.example');
  const noKey = await app.inject({ method: 'GET', url: '/v1/models', headers: { origin: 'http://a.example' } });
  assert.equal(noKey.statusCode, 401);
});
