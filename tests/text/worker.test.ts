/**
 * Big inputs are rendered and tokenized on a worker thread (text/worker-pool.ts): the ids equal the inline path's
 * for prompts and chats, template errors come back with their code and param, and the inline tokenizer is not
 * touched for them (the main thread only receives the ids).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { isSiftError } from '../../config/errors.js';
import { loadText, type TextSide } from '../../text/text.js';
import { WORKER_MIN_CHARS } from '../../text/worker-pool.js';
import { STORY, storyTextDir } from '../helpers/tiny-text.js';

let worker: TextSide;
let inline: TextSide;
before(() => {
  worker = loadText(storyTextDir());
  inline = loadText(storyTextDir(), { worker: false });
});
after(() => worker.close());

const big = `${STORY} `.repeat(Math.ceil(WORKER_MIN_CHARS / STORY.length) + 1);

test('a big prompt and a big chat: the worker gives the inline ids, without the main-thread tokenizer', async () => {
  assert.ok(big.length >= WORKER_MIN_CHARS);
  const calls: string[] = [];
  const encode = worker.tokenizer.encode.bind(worker.tokenizer);
  worker.tokenizer.encode = (t, o) => {
    calls.push(t);
    return encode(t, o);
  };
  const messages = [
    { role: 'system', content: 'Tell me a story.' },
    { role: 'user', content: big },
  ];
  assert.deepEqual(await worker.encodePrompt(big), await inline.encodePrompt(big));
  assert.deepEqual(await worker.encodeChat(messages), await inline.encodeChat(messages));
  assert.deepEqual(calls, [], 'big inputs never reach the main-thread tokenizer');
  // small inputs stay inline
  assert.deepEqual(await worker.encodePrompt('Hello'), await inline.encodePrompt('Hello'));
  assert.deepEqual(calls, ['Hello']);
});

test('errors from the worker keep their code and param; concurrent requests each get their own ids', async () => {
  await assert.rejects(
    worker.encodeChat([
      { role: 'user', content: big },
      { role: 'user', content: [{ type: 'image_url' }] },
    ]),
    (e: unknown) => isSiftError(e, 'INVALID_ARGUMENT') && e.param === 'messages[1].content[0].type',
  );
  const texts = [big, `Hi ${big}`, `${big} x`];
  const got = await Promise.all(texts.map((t) => worker.encodePrompt(t)));
  for (const [i, t] of texts.entries()) assert.deepEqual(got[i], await inline.encodePrompt(t));
});
