/**
 * The length bound the server checks before tokenizing (Tokenizer.minTokens) never exceeds the real token count:
 * property-based over texts built from the vocabulary's longest pieces (the worst case), random Unicode and
 * whitespace, on the stories15M tokenizer; a chat is bounded on its rendered text, so a limit it fits never refuses
 * it; what cannot fit is refused before tokenizing. And normalizerShrink's classification of normalizers.
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import fc from 'fast-check';
import { isSiftError } from '../../config/errors.js';
import { loadText, type TextSide } from '../../text/text.js';
import { normalizerShrink } from '../../text/tokenizer.js';
import { storiesDir } from '../helpers/stories.js';

let text: TextSide;
let longPieces: string[] = [];
before(async () => {
  const dir = await storiesDir();
  text = loadText(dir, { worker: false });
  const tok = text.tokenizer;
  const pieces: string[] = [];
  for (let id = 0; id < tok.vocabSize; id++) {
    const p = tok.idToToken(id);
    if (p && !/^<.*>$/.test(p)) pieces.push(p.replace(/\u2581/g, ' '));
  }
  pieces.sort((a, b) => b.length - a.length);
  longPieces = pieces.slice(0, 200);
});

const arbText = () =>
  fc
    .array(
      fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom(...longPieces) },
        { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 8 }) },
        { weight: 1, arbitrary: fc.constantFrom(' ', '  ', '\n', '\t', '😀', 'é', 'e\u0301') },
      ),
      { maxLength: 60 },
    )
    .map((xs) => xs.join(''));

test('minTokens <= the tokens of the text, for plain prompts (seeded, 300 texts)', async () => {
  await fc.assert(
    fc.asyncProperty(arbText(), async (s) => {
      const ids = await text.tokenizer.encode(s, { addBos: false });
      const min = text.tokenizer.minTokens([s]);
      assert.ok(min <= ids.length, `bound ${min} > ${ids.length} tokens for ${JSON.stringify(s)}`);
    }),
    { seed: 1313, numRuns: 300 },
  );
});

test('a chat is bounded after rendering: a limit it fits never refuses it (seeded, 100 chats)', async () => {
  // the template may drop messages (stories15M's fallback keeps only user turns): the bound is on the rendered text
  await fc.assert(
    fc.asyncProperty(fc.array(arbText(), { minLength: 1, maxLength: 4 }), async (contents) => {
      const messages = contents.map((content, i) => ({ role: i % 2 ? 'assistant' : 'user', content }));
      const ids = await text.encodeChat(messages);
      const fits = await text.encodeChat(messages, { maxTokens: ids.length + 1, describe: 'limit' });
      assert.deepEqual(fits, ids);
    }),
    { seed: 1414, numRuns: 100 },
  );
});

test('prompts that cannot fit are refused before tokenizing, naming the field', async () => {
  const limit = { maxTokens: 256, describe: "this model's maximum context length is 256 tokens" };
  const huge = 'Once upon a time there was a girl. '.repeat(20_000);
  const calls: string[] = [];
  const encode = text.tokenizer.encode.bind(text.tokenizer);
  text.tokenizer.encode = (t, o) => {
    calls.push(t);
    return encode(t, o);
  };
  try {
    await assert.rejects(text.encodePrompt(huge, limit), (e: unknown) => {
      assert.ok(isSiftError(e, 'CONTEXT_LENGTH_EXCEEDED'));
      assert.equal(e.param, 'prompt');
      assert.match(
        e.message,
        /^this model's maximum context length is 256 tokens; the prompt has 700000 characters, at least \d+ tokens/,
      );
      return true;
    });
    await assert.rejects(
      text.encodeChat([{ role: 'user', content: huge }], limit),
      (e: unknown) => isSiftError(e, 'CONTEXT_LENGTH_EXCEEDED') && e.param === 'messages',
    );
    // an assistant turn the template drops does not count
    const ok = await text.encodeChat(
      [
        { role: 'assistant', content: huge },
        { role: 'user', content: 'Hi' },
      ],
      limit,
    );
    assert.ok(ok.length < 10);
    assert.equal(calls.filter((c) => c.length > 1000).length, 0, 'the huge texts were never tokenized');
  } finally {
    text.tokenizer.encode = encode;
  }
});

test('the bound is tight enough to matter: the longest pieces repeated give about as many tokens', async () => {
  const s = longPieces[0].repeat(50);
  const ids = await text.tokenizer.encode(s, { addBos: false });
  const min = text.tokenizer.minTokens([s]);
  assert.ok(min >= 40 && min <= ids.length, `${min} vs ${ids.length}`);
  // 7.5 MB of story text is far above any 256-token context: the server refuses it without tokenizing
  assert.ok(text.tokenizer.minTokens(['Once upon a time there was a girl. '.repeat(215_000)]) > 400_000);
});

test('normalizerShrink: none or length-keeping 1, Unicode forms 4, anything that can drop text Infinity', () => {
  assert.equal(normalizerShrink(null), 1);
  assert.equal(
    normalizerShrink({
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '\u2581' },
        { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' },
      ],
    }),
    1,
  );
  assert.equal(normalizerShrink({ type: 'NFC' }), 4);
  assert.equal(normalizerShrink({ type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Lowercase' }] }), 4);
  assert.equal(normalizerShrink({ type: 'Replace', pattern: { String: '   ' }, content: ' ' }), 3);
  for (const n of [
    { type: 'Strip', strip_left: true, strip_right: true },
    { type: 'StripAccents' },
    { type: 'BertNormalizer' },
    { type: 'Precompiled', precompiled_charsmap: '' },
    { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
    { type: 'Sequence', normalizers: [{ type: 'NFC' }, { type: 'Strip' }] },
  ]) {
    assert.equal(normalizerShrink(n), Number.POSITIVE_INFINITY, JSON.stringify(n));
  }
});
