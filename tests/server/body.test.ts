/**
 * JSON bodies of 1 MiB or more are parsed on a worker thread (server/body.ts): the result is what fastify's own
 * parser gives (a request through either path reaches the engine the same), and bad JSON or a `__proto__` key is
 * the same 400 on both paths.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BIG_BODY_BYTES } from '../../server/body.js';
import { FakeEngine } from './fake-engine.js';
import { testApp, testText } from './helpers.js';

const big = (n: number) => ' '.repeat(n); // insignificant JSON whitespace: the same body, only bigger

test('a big body parses on the worker to the same request; bad JSON and __proto__ are 400 on both paths', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake);
  const body = JSON.stringify({
    model: 'fake-model',
    prompt: 'Once upon a time ☃ 😀',
    max_tokens: 3,
    temperature: 0,
    user: 'é',
  });
  const post = (payload: string) =>
    app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload });
  const small = await post(body);
  const large = await post(`\ufeff${big(BIG_BODY_BYTES)}${body}${big(10)}`);
  assert.equal(small.statusCode, 200, small.body);
  assert.equal(large.statusCode, 200, large.body);
  assert.equal(large.json().choices[0].text, small.json().choices[0].text);
  assert.deepEqual(fake.submitted[1].promptIds, fake.submitted[0].promptIds);
  for (const pad of [0, BIG_BODY_BYTES]) {
    const bad = await post(`${big(pad)}{"model": "fake-model", "prompt": `);
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().error.code, 'fst_err_ctp_invalid_json_body');
    const proto = await post(`${big(pad)}{"model": "fake-model", "prompt": "x", "__proto__": {"admin": true}}`);
    assert.equal(proto.statusCode, 400, `pad ${pad}`);
    assert.equal(proto.json().error.code, 'fst_err_ctp_invalid_json_body');
  }
  assert.equal(fake.submitted.length, 2);
});
