/**
 * The server on a real port with the real default model (stories15M) and the real engine core, driven by the
 * official `openai` client and by raw node:http (SSE framing byte for byte). Short max_tokens keep it quick.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { engineConfig } from '../../config/engine.js';
import { EngineCore } from '../../engine/core.js';
import { ModelRunner } from '../../model/runner.js';
import { buildApp } from '../../server/app.js';
import { listen } from '../../server/server.js';
import { loadText, type TextSide } from '../../text/text.js';
import { storiesDir } from '../helpers/stories.js';
import { cfg, lastEvent, parseSse, streamedText } from './helpers.js';

const MODEL = 'stories15M';
const KEY = 'sk-live-test';

interface Served {
  app: FastifyInstance;
  url: string;
  loop: EngineCore;
}

async function serve(loop: EngineCore, text: TextSide, flags: Parameters<typeof cfg>[0] = {}): Promise<Served> {
  const app = await buildApp({ engine: loop, text, config: cfg({ apiKeys: KEY, ...flags }), modelName: MODEL });
  const { url } = await listen(app, { host: '127.0.0.1', port: 0 });
  return { app, url, loop };
}

/** POSTs JSON over a raw socket and returns the exact response bytes as text. */
function rawPost(
  url: string,
  path: string,
  body: unknown,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}${path}`,
      { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/** Opens a stream and destroys the socket after the first content chunk; resolves when it has. */
function streamThenDisconnect(url: string, body: unknown): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${url}/v1/completions`,
      { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` } },
      (res) => {
        let seen = '';
        res.on('data', (c: Buffer) => {
          seen += c.toString('utf8');
          if (seen.includes('"text":"')) {
            req.destroy();
            resolve();
          }
        });
        res.on('error', () => resolve());
        res.on('end', () => resolve());
      },
    );
    req.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'ECONNRESET' ? resolve() : reject(e)));
    req.end(JSON.stringify(body));
  });
}

async function waitIdle(loop: EngineCore, timeoutMs = 20000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const s = loop.stats();
    if (s.running === 0 && s.waiting === 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`engine not idle after ${timeoutMs} ms: ${JSON.stringify(loop.stats())}`);
}

describe('live server, stories15M', () => {
  let text: TextSide;
  let main: Served;
  let client: OpenAI;
  const engines: EngineCore[] = [];

  before(async () => {
    const dir = await storiesDir();
    text = loadText(dir);
    const engine = await ModelRunner.load(dir, engineConfig());
    const loop = EngineCore.create(engine, { modelName: MODEL });
    engines.push(loop);
    main = await serve(loop, text);
    client = new OpenAI({ baseURL: `${main.url}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60000 });
  });

  after(async () => {
    await main?.app.close();
    for (const e of engines.reverse()) await e.shutdown(0);
  });

  test('/health, /v1/models, auth over HTTP', async () => {
    assert.equal((await fetch(`${main.url}/health`)).status, 200);
    const models = await client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      [MODEL],
    );
    const anon = await fetch(`${main.url}/v1/models`);
    assert.equal(anon.status, 401);
    assert.equal(((await anon.json()) as { error: { code: string } }).error.code, 'invalid_api_key');
  });

  test('chat: non-stream and stream (include_usage) give the same greedy text', async () => {
    const params = {
      model: MODEL,
      messages: [{ role: 'user' as const, content: 'Tell me a story about a cat.' }],
      max_tokens: 10,
      temperature: 0,
    };
    const r = await client.chat.completions.create(params);
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage?.completion_tokens, 10);
    assert.ok((r.usage?.prompt_tokens ?? 0) > 0);
    const content = r.choices[0].message.content ?? '';
    assert.ok(content.length > 0);

    const stream = await client.chat.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    });
    let streamed = '';
    let role = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.role) role = c.delta.role;
        streamed += c.delta.content ?? '';
        finish = c.finish_reason ?? finish;
      }
    }
    assert.equal(role, 'assistant');
    assert.equal(streamed, content);
    assert.equal(finish, 'length');
    assert.deepEqual({ p: usage?.prompt_tokens, c: usage?.completion_tokens }, { p: r.usage?.prompt_tokens, c: 10 });
  });

  test('completions: the reference story, prompt lists, stop sequences', async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: 'Once upon a time',
      max_tokens: 12,
      temperature: 0,
    });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0].text, ', there was a little girl named Lily. She loved');
    assert.equal(r.usage?.prompt_tokens, 5);

    const stop = await client.completions.create({
      model: MODEL,
      prompt: 'Once upon a time',
      max_tokens: 12,
      temperature: 0,
      stop: ['Lily', 'zebra'],
    });
    assert.equal(stop.choices[0].text, ', there was a little girl named ');
    assert.equal(stop.choices[0].finish_reason, 'stop');

    const stream = await client.completions.create({
      model: MODEL,
      prompt: 'Once upon a time',
      max_tokens: 12,
      temperature: 0,
      stop: ' named',
      stream: true,
    });
    let streamed = '';
    let finish: string | null = null;
    for await (const chunk of stream)
      for (const c of chunk.choices) {
        streamed += c.text;
        finish = c.finish_reason ?? finish;
      }
    assert.equal(streamed, ', there was a little girl');
    assert.equal(finish, 'stop');

    const many = await client.completions.create({
      model: MODEL,
      prompt: ['Once upon a time', 'The dog'],
      max_tokens: 4,
      temperature: 0,
    });
    assert.deepEqual(
      many.choices.map((c) => c.index),
      [0, 1],
    );
    assert.equal(many.choices[0].text, ', there was a');
  });

  test('seeded sampling is reproducible; n > 1 uses seed, seed+1', async () => {
    const base = { model: MODEL, prompt: 'The little bird', max_tokens: 8, temperature: 1, top_p: 0.95 };
    const a = await client.completions.create({ ...base, seed: 42 });
    const b = await client.completions.create({ ...base, seed: 42 });
    assert.equal(a.choices[0].text, b.choices[0].text);
    const c43 = await client.completions.create({ ...base, seed: 43 });
    const n = await client.completions.create({ ...base, seed: 42, n: 2 });
    assert.deepEqual(
      n.choices.map((c) => c.text),
      [a.choices[0].text, c43.choices[0].text],
    );
    const chatN = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 4,
      temperature: 1,
      seed: 7,
      n: 3,
    });
    assert.deepEqual(
      chatN.choices.map((c) => c.index),
      [0, 1, 2],
    );
  });

  test('chat logprobs from the real sampler', async () => {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 3,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
    });
    const lp = r.choices[0].logprobs?.content ?? [];
    assert.equal(lp.length, 3);
    for (const e of lp) {
      assert.ok(e.logprob <= 0);
      assert.equal(e.top_logprobs.length, 2);
      // Greedy: the sampled token is the most likely one.
      assert.equal(e.top_logprobs[0].token, e.token);
    }
  });

  test('raw SSE framing: data lines, blank-line separators, [DONE], keep-alive comments', async () => {
    const body = {
      model: MODEL,
      prompt: 'Once upon a time',
      max_tokens: 6,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    };
    const r = await rawPost(main.url, '/v1/completions', body);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/event-stream; charset=utf-8');
    assert.ok(r.headers['x-request-id']);
    assert.match(r.body, /^(data: \{[^\n]*\}\n\n)+data: \[DONE\]\n\n$/);
    const s = parseSse(r.body);
    assert.equal(s.comments, 0);
    assert.equal(streamedText(s.events).get(0), ', there was a little girl');
    assert.deepEqual(s.events.at(-1)?.choices, []);

    // A second app on the same engine with a tiny keep-alive interval: comments appear while the engine works.
    const ka = await serve(main.loop, text, { keepAliveMs: 1 });
    try {
      const k = await rawPost(ka.url, '/v1/completions', {
        ...body,
        prompt: 'Once upon a time there was a dog named Max',
        max_tokens: 4,
      });
      assert.match(k.body, /^((data: \{[^\n]*\}|: keep-alive)\n\n)+data: \[DONE\]\n\n$/);
      assert.ok(parseSse(k.body).comments > 0, 'no keep-alive comment');
    } finally {
      await ka.app.close();
    }
  });

  test('8 concurrent greedy streams complete, each equal to the same request served alone', async () => {
    const prompts = [
      'Once upon a time',
      'The cat',
      'Tom and Sue',
      'One day, a big dog',
      'There was a tree',
      'Lily likes',
      'The sun was hot',
      'A boy named Ben',
    ];
    const alone: string[] = [];
    for (const p of prompts)
      alone.push(
        (await client.completions.create({ model: MODEL, prompt: p, max_tokens: 8, temperature: 0 })).choices[0].text,
      );
    const together = await Promise.all(
      prompts.map(async (p) => {
        const s = await client.completions.create({
          model: MODEL,
          prompt: p,
          max_tokens: 8,
          temperature: 0,
          stream: true,
        });
        let t = '';
        for await (const c of s) t += c.choices[0]?.text ?? '';
        return t;
      }),
    );
    assert.deepEqual(together, alone);
  });

  test('disconnecting 10 of 20 streams mid-stream frees their KV pages', async () => {
    await waitIdle(main.loop);
    const baseline = main.loop.stats().kvPagesUsed;
    const body = (i: number) => ({
      model: MODEL,
      prompt: `Story number ${i}: once upon a time`,
      max_tokens: 16,
      temperature: 0,
      stream: true,
    });
    const jobs = Array.from({ length: 20 }, (_, i) =>
      i % 2 === 0
        ? streamThenDisconnect(main.url, body(i))
        : rawPost(main.url, '/v1/completions', body(i)).then((r) => {
            const s = parseSse(r.body);
            assert.ok(s.done);
            assert.equal(lastEvent(s).choices[0].finish_reason, 'length');
          }),
    );
    await Promise.all(jobs);
    await waitIdle(main.loop);
    assert.equal(main.loop.stats().kvPagesUsed, baseline);
    const metrics = await (await fetch(`${main.url}/metrics`)).text();
    assert.match(metrics, /sift:request_success_total\{finished_reason="abort"\} 10/);
  });

  test('a KV pool too small for the load: requests are preempted and all complete correctly', async () => {
    const dir = await storiesDir();
    // A second engine on the same GPU device, its loop limited to 3 pages of 64 tokens: each request grows past
    // 64 tokens (52 prompt + 16 generated = 2 pages), so the three cannot all run at once.
    const engine = await ModelRunner.load(dir, engineConfig(), { gpu: (main.loop.executor as ModelRunner).gpu });
    const small = EngineCore.create(engine, { modelName: MODEL, numPages: 3, enablePrefixCache: false });
    engines.push(small);
    const srv = await serve(small, text);
    try {
      const c = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: KEY, maxRetries: 0, timeout: 120000 });
      const story =
        'Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. One day, she saw a big dog in the park. The dog was brown and had a long tail.';
      const prompts = [`${story} Lily wanted to`, `${story} The dog`, `${story} She`];
      const want: string[] = [];
      for (const p of prompts)
        want.push(
          (await client.completions.create({ model: MODEL, prompt: p, max_tokens: 16, temperature: 0 })).choices[0]
            .text,
        );
      const got = await Promise.all(
        prompts.map(
          async (p) =>
            (await c.completions.create({ model: MODEL, prompt: p, max_tokens: 16, temperature: 0 })).choices[0].text,
        ),
      );
      assert.deepEqual(got, want);
      assert.ok(small.stats().preemptions > 0, `no preemption: ${JSON.stringify(small.stats())}`);
      const m = await (await fetch(`${srv.url}/metrics`)).text();
      assert.match(m, /sift:num_preemptions_total [1-9]/);
    } finally {
      await srv.app.close();
    }
  });
});
