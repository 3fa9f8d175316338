/**
 * A big body's prompts are judged on the parse worker (server/prompt-check.ts): the worker's refusal is exactly the
 * route's own length check (same prompts refused, same message and param; a chat judged on its rendered template,
 * tools included), a refused body reaches the main thread only as a small stand-in, every check that comes before
 * the length check still answers first, and a body that fits reaches the route whole, its text intact across the
 * shared slabs it crosses in.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { isSiftError, type SiftError } from '../../config/errors.js';
import { BIG_BODY_BYTES, SLAB_BYTES } from '../../server/body.js';
import { type PromptCheck, promptLimit, refusePrompts } from '../../server/prompt-check.js';
import { completionPrompts } from '../../server/routes/completions.js';
import { chatPrompt } from '../../server/tools.js';
import { ChatTemplate, type ChatTemplateOptions } from '../../text/chat-template.js';
import type { PromptLimit } from '../../text/prompt-bound.js';
import { loadText, TextSide } from '../../text/text.js';
import { STORY, storyTextDir } from '../helpers/tiny-text.js';
import { FakeEngine } from './fake-engine.js';
import { testApp, testText } from './helpers.js';

const inline = loadText(storyTextDir(), { worker: false });
const bound = inline.tokenizer.lengthBound();
const templates = (o: ChatTemplateOptions) => new ChatTemplate(o);

/** A chat template that renders every role and the tools (unlike the story model's fallback, which keeps users). */
const TOOLS_TEMPLATE: ChatTemplateOptions = {
  template:
    '{% if tools %}{% for t in tools %}[tool {{ t.function.name }}: {{ t.function.description }}]{% endfor %}{% endif %}' +
    '{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}<assistant>',
};

/** What the route's own length check throws for `body` (null when the prompts are encoded). */
async function routeRefusal(kind: 'chat' | 'completion', body: never, side: TextSide, limit: PromptLimit) {
  try {
    if (kind === 'completion') await completionPrompts(side, (body as { prompt: never }).prompt, limit);
    else {
      const { messages, tools } = chatPrompt(body);
      await side.encodeChat(messages, limit, { tools });
    }
    return null;
  } catch (e) {
    if (!isSiftError(e, 'CONTEXT_LENGTH_EXCEEDED')) throw e;
    return e;
  }
}

function check(kind: 'chat' | 'completion', maxTokens: number, template?: ChatTemplateOptions): PromptCheck {
  assert.ok(bound, 'the story tokenizer bounds tokens by length');
  return { kind, limit: { maxTokens, describe: `a limit of ${maxTokens}` }, bound, template };
}

const words = STORY.split(' ');
/** Texts of story words (some with a multi-byte character), a few hundred to a few thousand characters. */
const arbText = fc
  .array(fc.oneof(fc.constantFrom(...words), fc.constantFrom('☃', 'é', '😀', '\n')), { minLength: 20, maxLength: 600 })
  .map((w) => w.join(' '));

test('the worker refuses exactly what the route refuses: completions prompts (seeded, 60 cases)', async () => {
  const outcomes = { refused: 0, fits: 0 };
  await fc.assert(
    fc.asyncProperty(
      fc.array(arbText, { minLength: 1, maxLength: 3 }),
      fc.integer({ min: -2, max: 2 }),
      async (ps, d) => {
        const prompt = ps.length === 1 ? ps[0] : ps;
        // a limit around the bound of the longest prompt: just refused, just not
        const maxTokens = Math.max(2, Math.max(...ps.map((p) => inline.tokenizer.minTokens([p]))) + 1 + d);
        const c = check('completion', maxTokens);
        const want = await routeRefusal('completion', { prompt } as never, inline, c.limit);
        const got = refusePrompts({ model: 'm', prompt }, c, templates);
        assert.deepEqual(
          got && { message: got.message, param: got.param },
          want && { message: want.message, param: want.param },
        );
        outcomes[want ? 'refused' : 'fits']++;
      },
    ),
    { seed: 1301, numRuns: 60 },
  );
  assert.ok(outcomes.refused >= 10 && outcomes.fits >= 10, JSON.stringify(outcomes));
});

test('the worker refuses exactly what the route refuses: chats on their rendered template (seeded, 60 cases)', async () => {
  const tool = { type: 'function', function: { name: 'tell', description: STORY } };
  const outcomes = { refused: 0, fits: 0 };
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.constantFrom('system', 'user', 'assistant'), arbText, fc.boolean()), {
        minLength: 1,
        maxLength: 4,
      }),
      fc.boolean(),
      fc.boolean(),
      fc.integer({ min: -2, max: 2 }),
      async (turns, fallback, withTools, d) => {
        const messages = turns.map(([role, text, parts]) => ({
          role,
          content: parts ? [{ type: 'text', text }] : text,
        }));
        const body = { model: 'm', messages, ...(withTools ? { tools: [tool] } : {}) };
        const template = fallback ? inline.chat.options : TOOLS_TEMPLATE;
        const side = new TextSide(inline.tokenizer, templates(template), inline.stopIds);
        const p = chatPrompt(body as never);
        const rendered = side.chat.render(p.messages, { tools: p.tools });
        const maxTokens = Math.max(2, inline.tokenizer.minTokens([rendered]) + 1 + d);
        const c = check('chat', maxTokens, template);
        const want = await routeRefusal('chat', body as never, side, c.limit);
        const got = refusePrompts(body, c, templates);
        assert.deepEqual(
          got && { message: got.message, param: got.param },
          want && { message: want.message, param: want.param },
        );
        outcomes[want ? 'refused' : 'fits']++;
      },
    ),
    { seed: 1302, numRuns: 60 },
  );
  assert.ok(outcomes.refused >= 10 && outcomes.fits >= 10, JSON.stringify(outcomes));
});

test('the worker judges a chat as rendered, and leaves to the route what it cannot judge', () => {
  const long = `${STORY} `.repeat(200);
  const limit = inline.tokenizer.minTokens([long]); // the long text alone cannot fit
  // the story model's fallback template drops assistant turns: their length refuses nothing
  const dropped = {
    model: 'm',
    messages: [
      { role: 'assistant', content: long },
      { role: 'user', content: 'Hi' },
    ],
  };
  assert.equal(refusePrompts(dropped, check('chat', limit, inline.chat.options), templates), null);
  assert.ok(refusePrompts(dropped, check('chat', limit, TOOLS_TEMPLATE), templates));
  // a template that throws, a body of the wrong shape, token ids: nothing refused here (the route answers)
  const strict = { template: "{{ raise_exception('no') }}" };
  const user = { model: 'm', messages: [{ role: 'user', content: long }] };
  assert.equal(refusePrompts(user, check('chat', limit, strict), templates), null);
  assert.equal(refusePrompts({ model: 'm', messages: 'x' }, check('chat', limit, TOOLS_TEMPLATE), templates), null);
  assert.equal(refusePrompts({ model: 'm', prompt: [1, 2, 3] }, check('completion', 2), templates), null);
  assert.equal(refusePrompts([long], check('completion', 2), templates), null);
});

interface Seen {
  url: string;
  /** Characters of the body the route got, as JSON. */
  chars: number;
  body: Record<string, unknown>;
  refused: boolean;
}

/** An app on the story vocabulary whose hook records what each route got from the body parser. */
async function watchedApp(t: Parameters<typeof testApp>[0], maxContext: number) {
  const text = await testText();
  const fake = await FakeEngine.story(text, { maxContext });
  const app: FastifyInstance = await testApp(t, fake);
  const seen: Seen[] = [];
  app.addHook('preHandler', async (req) => {
    const body = req.body as Record<string, unknown>;
    seen.push({ url: req.url, chars: JSON.stringify(body).length, body, refused: req.promptRefusal !== null });
  });
  const post = (url: string, payload: unknown) =>
    app.inject({
      method: 'POST',
      url,
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify(payload),
    });
  return { text, fake, app, seen, post };
}

const huge = 'Once upon a time, there was a little girl. '.repeat(Math.ceil((1.2 * BIG_BODY_BYTES) / 44));

test('a big prompt that cannot fit is refused on the worker: the route gets a stand-in, the same 400', async (t) => {
  const { text, fake, seen, post } = await watchedApp(t, 256);
  const limit = promptLimit(fake);
  const cases = [
    {
      url: '/v1/chat/completions',
      kind: 'chat' as const,
      body: { model: 'fake-model', messages: [{ role: 'user', content: huge }] },
    },
    { url: '/v1/completions', kind: 'completion' as const, body: { model: 'fake-model', prompt: huge } },
    { url: '/v1/completions', kind: 'completion' as const, body: { model: 'fake-model', prompt: ['Hi', huge] } },
  ];
  for (const c of cases) {
    const want = (await routeRefusal(c.kind, c.body as never, text, limit)) as SiftError;
    assert.ok(want, 'the route itself would refuse it');
    const r = await post(c.url, c.body);
    assert.equal(r.statusCode, 400, r.body);
    assert.deepEqual(r.json(), {
      error: {
        message: want.message,
        type: 'invalid_request_error',
        param: want.param,
        code: 'context_length_exceeded',
      },
    });
    const s = seen.at(-1);
    assert.equal(s?.url, c.url);
    assert.ok(s.refused);
    assert.ok(s.chars < 200, `the route got ${s.chars} characters of body, not the prompt`);
  }
  assert.equal(fake.submitted.length, 0);
});

test('a big body that cannot fit still gets the errors of every check before the length check', async (t) => {
  const { seen, post } = await watchedApp(t, 256);
  const user = (c: string) => [{ role: 'user', content: c }];
  const variants: Array<(c: string) => Record<string, unknown>> = [
    (c) => ({ model: 'gpt-4', messages: user(c) }), // the model check
    (c) => ({ model: 'fake-model', temperature: 5, messages: user(c) }), // the schema
    (c) => ({ model: 'fake-model', tool_choice: 'required', messages: user(c) }), // tools, checked in the route first
    (c) => ({ model: 'fake-model', messages: [...user(c), { role: 'robot', content: 'x' }] }), // an enum, value named
    (c) => ({ model: 'fake-model', messages: [{ role: 'user', content: [{ type: 'image_url', text: c }] }] }), // template
  ];
  for (const v of variants) {
    const big = await post('/v1/chat/completions', v(huge));
    const small = await post('/v1/chat/completions', v('Hi'));
    const what = JSON.stringify(v('...'));
    assert.ok(small.statusCode >= 400 && small.json().error.code !== 'context_length_exceeded', what);
    assert.deepEqual([big.statusCode, big.json()], [small.statusCode, small.json()], what);
  }
  // those past the schema reached the route (big, then small): as stand-ins where the worker could judge them
  assert.deepEqual(
    seen.map((x) => x.refused),
    [true, false, true, false, false, false],
  );
});

test('a big prompt that fits reaches the route whole, multi-byte characters across slab boundaries intact', async (t) => {
  const { seen, post } = await watchedApp(t, 1 << 22);
  const prefix = JSON.stringify({ model: 'no-such-model', prompt: '' }).length - 2; // bytes before the prompt text
  // a 4-byte character cut 1|3 by the first slab boundary, a 3-byte one 2|1 by the second
  const fill = (bytes: number) => 'a'.repeat(bytes);
  const prompt = `${fill(SLAB_BYTES - 1 - prefix)}😀${fill(2 * SLAB_BYTES - 2 - (SLAB_BYTES + 3))}☃ é ${STORY}`;
  assert.equal(Buffer.from(JSON.stringify({ model: 'no-such-model', prompt })).indexOf('☃'), 2 * SLAB_BYTES - 2);
  for (const [url, body] of [
    ['/v1/completions', { model: 'no-such-model', prompt }],
    ['/v1/chat/completions', { model: 'no-such-model', messages: [{ role: 'user', content: prompt }] }],
  ] as const) {
    const r = await post(url, body); // the model check answers (no tokenizing), after the route has the body
    assert.equal(r.json().error.code, 'model_not_found');
    const s = seen.at(-1);
    assert.equal(s?.refused, false);
    assert.deepEqual(s.body, body);
  }
});

after(() => inline.close());
