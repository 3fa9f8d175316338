/**
 * JSON bodies of 1 MiB or more are parsed on a worker thread (server/body.ts): the result is what fastify's own
 * parser gives (a request through either path reaches the engine the same), and bad JSON or a `__proto__` key is
 * the same 400 on both paths.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import { BIG_BODY_BYTES } from '../../server/body.js';
import { listen } from '../../server/server.js';
import { FakeEngine } from './fake-engine.js';
import { cfg, testApp, testText } from './helpers.js';

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
    // one leading BOM is dropped, as fastify's parser does; a second is not JSON
    const boms = await post(`\ufeff\ufeff${big(pad)}${body}`);
    assert.equal(boms.statusCode, 400, `pad ${pad}`);
    assert.equal(boms.json().error.code, 'fst_err_ctp_invalid_json_body');
  }
  assert.equal(fake.submitted.length, 2);
});

/** POSTs `parts` over a real socket one write at a time (chunked unless `length` is given); status and body. */
function postParts(
  url: string,
  parts: string[],
  length?: number,
): Promise<{ status: number; body: Record<string, { code?: string; message?: string }> }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { 'content-type': 'application/json' };
    if (length !== undefined) headers['content-length'] = length;
    const req = http.request(`${url}/v1/completions`, { method: 'POST', headers }, (res) => {
      let b = '';
      res.on('data', (c: Buffer) => (b += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(b) }));
    });
    req.on('error', reject);
    (async () => {
      for (const p of parts) {
        if (req.destroyed) return;
        req.write(p);
        await new Promise((r) => setImmediate(r));
      }
      req.end();
    })();
  });
}

test('over a socket: a big body in many chunks parses; the body limit holds, chunked or declared', async (t) => {
  const fake = await FakeEngine.story(await testText());
  const app = await testApp(t, fake, { config: cfg({ maxBodyBytes: 4 * BIG_BODY_BYTES }) });
  const { url } = await listen(app, { host: '127.0.0.1', port: 0 });
  const body = JSON.stringify({ model: 'fake-model', prompt: 'Once upon a time ☃', max_tokens: 3, temperature: 0 });
  const direct = await app.inject({
    method: 'POST',
    url: '/v1/completions',
    headers: { 'content-type': 'application/json' },
    payload: body,
  });
  assert.equal(direct.statusCode, 200, direct.body);
  // 2 MiB of whitespace in 1000-byte writes, then the body with its multi-byte characters split across writes
  const pad = Array.from({ length: (2 * BIG_BODY_BYTES) / 1000 }, () => big(1000));
  const bytes = Buffer.from(body);
  const tail = [bytes.subarray(0, bytes.length - 5).toString('latin1'), bytes.subarray(-5).toString('latin1')];
  const ok = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = http.request(
      `${url}/v1/completions`,
      { method: 'POST', headers: { 'content-type': 'application/json' } },
      (res) => {
        let b = '';
        res.on('data', (c: Buffer) => (b += c.toString('utf8')));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: b }));
      },
    );
    req.on('error', reject);
    (async () => {
      for (const p of pad) {
        req.write(p);
        await new Promise((r) => setImmediate(r));
      }
      for (const p of tail) req.write(Buffer.from(p, 'latin1'));
      req.end();
    })();
  });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(JSON.parse(ok.text).choices[0].text, direct.json().choices[0].text);
  assert.deepEqual(fake.submitted.at(-1)?.promptIds, fake.submitted.at(-2)?.promptIds);
  // over the limit: declared up front, and chunked (found while reading); both 413, neither reaches the engine
  const n = fake.submitted.length;
  const over = Array.from({ length: (5 * BIG_BODY_BYTES) / 1000 }, () => big(1000));
  const declared = await postParts(url, over.slice(0, 1), 5 * BIG_BODY_BYTES);
  assert.equal(declared.status, 413);
  const chunked = await postParts(url, over);
  assert.equal(chunked.status, 413);
  assert.equal(chunked.body.error.code, 'body_too_large');
  assert.equal(fake.submitted.length, n);
});
