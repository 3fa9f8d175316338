/**
 * The API under a seeded property-based fuzz (tests/helpers/fuzz.ts): 400 broken requests against the real engine
 * core (CPU executor, the story-vocab model), in-process. No 5xx, every error OpenAI-shaped and naming the broken
 * field, every 200 complete; afterwards the same greedy completions as before, no KV page held, /health 200.
 * The 10,000-request run against `sift serve` is scripts/fuzz-server.mjs, recorded in bench/results.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { CPU_MODEL, cpuApp } from '../helpers/cpu-app.js';
import { type FuzzCase, type FuzzResponse, fuzzCases, judge, namesField, runFuzz } from '../helpers/fuzz.js';

const MAX_BODY = 64 * 1024;

function injectSend(app: FastifyInstance) {
  return async (c: FuzzCase): Promise<FuzzResponse> => {
    const r = await app.inject({ method: c.method, url: c.url, headers: c.headers, payload: c.body });
    return { status: r.statusCode, headers: r.headers as FuzzResponse['headers'], body: r.body };
  };
}

test('the judge: 5xx, non-OpenAI error bodies and errors naming another field fail; the rest pass', () => {
  const c: FuzzCase = { what: 't', method: 'POST', url: '/v1/completions', headers: {}, body: '', field: 'top_p' };
  const json = { 'content-type': 'application/json; charset=utf-8' };
  const err = (param: string | null) =>
    JSON.stringify({ error: { message: 'm', type: 'invalid_request_error', param, code: 'invalid_argument' } });
  assert.equal(judge(c, { status: 400, headers: json, body: err('top_p') }).ok, true);
  assert.equal(judge(c, { status: 400, headers: json, body: err('temperature') }).ok, false);
  assert.equal(judge(c, { status: 400, headers: json, body: err(null) }).ok, false);
  assert.equal(judge(c, { status: 500, headers: json, body: err(null) }).ok, false);
  assert.equal(judge(c, { status: 400, headers: json, body: '{"message": "bad"}' }).ok, false);
  assert.equal(judge({ ...c, field: null }, { status: 413, headers: json, body: err(null) }).ok, true);
  assert.equal(judge(c, { status: 200, headers: json, body: '{"choices":[{"finish_reason":"length"}]}' }).ok, true);
  assert.equal(judge(c, { status: 200, headers: json, body: '{"choices":[{"finish_reason":"abort"}]}' }).ok, false);
  const sse = { 'content-type': 'text/event-stream' };
  assert.equal(
    judge(c, { status: 200, headers: sse, body: 'data: {"choices":[{"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n' })
      .ok,
    true,
  );
  assert.equal(judge(c, { status: 200, headers: sse, body: `data: ${err(null)}\n\ndata: [DONE]\n\n` }).ok, false);
  assert.ok(namesField('prompt[1][3]', 'prompt') && namesField('attention.token_budget', 'attention'));
  assert.ok(!namesField('prompts', 'prompt') && !namesField(null, 'prompt'));
});

test('seeded fuzz, 400 requests: no 5xx, OpenAI-shaped errors naming the field, same greedy text after', async (t) => {
  const { app, core } = await cpuApp(t, { config: { maxBodyBytes: MAX_BODY } });
  const send = injectSend(app);
  const greedy = async () => {
    const chat = await app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      payload: {
        model: CPU_MODEL,
        messages: [{ role: 'user', content: 'Once upon a time' }],
        max_tokens: 12,
        temperature: 0,
      },
    });
    const cmpl = await app.inject({
      method: 'POST',
      url: '/v1/completions',
      payload: { model: CPU_MODEL, prompt: 'Lily was a little girl', max_tokens: 12, temperature: 0 },
    });
    assert.equal(chat.statusCode, 200);
    assert.equal(cmpl.statusCode, 200);
    return [chat.json().choices[0].message.content, cmpl.json().choices[0].text];
  };
  const before = await greedy();
  const cases = fuzzCases(
    { model: CPU_MODEL, vocabSize: core.executor.limits.vocabSize, maxBodyBytes: MAX_BODY, maxTokens: 4 },
    20261201,
    400,
  );
  const { failures, byStatus } = await runFuzz(cases, send, { concurrency: 4 });
  assert.deepEqual(
    failures.slice(0, 5).map((f) => `${f.case.what} -> ${f.problem}`),
    [],
    `${failures.length} failures; statuses ${JSON.stringify(byStatus)}`,
  );
  // the cases reach every kind of answer
  for (const s of ['200', '400', '404', '413', '415'])
    assert.ok(byStatus[s] > 0, `no ${s}: ${JSON.stringify(byStatus)}`);
  assert.deepEqual(await greedy(), before, 'the same greedy completions after the fuzz');
  const st = core.stats();
  assert.equal(st.kvPagesUsed, 0);
  assert.equal(st.running + st.waiting, 0);
  assert.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200);
});
