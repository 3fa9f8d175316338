import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { isSiftError } from '../../config/errors.js';
import { Tokenizer } from '../../text/tokenizer.js';
import { storiesDir } from '../helpers/stories.js';

let tk: Tokenizer;
before(async () => {
  tk = Tokenizer.load(await storiesDir());
});

const TEXTS = [
  'Once upon a time',
  ' leading space',
  'trailing space ',
  '  two leading, two trailing  ',
  'multiple   inner    spaces',
  'café, naïve, Straße, 日本語',
  'emoji 😀👍🏽 and a flag 🇫🇷!',
  'tabs\tand\nnew\nlines\n\n',
  "It's a dog's life, isn't it?",
  ' ',
  '',
];

describe('tokenizer (stories15M, converted from llama2.c)', () => {
  test('known ids', async () => {
    assert.deepEqual(await tk.encode('Once upon a time', { addBos: true }), [1, 9038, 2501, 263, 931]);
    assert.deepEqual(await tk.encode('Once upon a time'), [1, 9038, 2501, 263, 931], 'BOS by default');
    assert.deepEqual(await tk.encode('Once upon a time', { addBos: false }), [9038, 2501, 263, 931]);
    // Pinned from SentencePiece's own rule (greedy best-score merges over the llama2.c vocab and scores).
    assert.deepEqual(await tk.encode(' hello  world ', { addBos: false }), [29871, 22172, 29871, 3186, 29871]);
    assert.deepEqual(
      await tk.encode('Lily 😀 café\nnew line', { addBos: false }),
      [365, 2354, 29871, 243, 162, 155, 131, 274, 28059, 13, 1482, 1196],
    );
    assert.deepEqual(await tk.encode('', { addBos: true }), [1]);
    assert.equal(tk.bosId, 1);
    assert.equal(tk.eosId, 2);
    assert.equal(tk.vocabSize, 32000);
    assert.equal(tk.idToToken(3 + 0x0a), '<0x0A>');
    assert.equal(tk.tokenToId('\u2581Once'), 9038);
  });

  test('a BOS spelled in the text (as chat templates write it) is the BOS token', async () => {
    assert.deepEqual(await tk.encode('<s>Once upon a time', { addBos: false }), [1, 9038, 2501, 263, 931]);
  });

  test('decode(encode(s)) == s, with and without BOS', async () => {
    for (const s of TEXTS) {
      const ids = await tk.encode(s);
      assert.equal(tk.decode(ids), s, JSON.stringify(s));
      assert.equal(tk.decode(ids.slice(1)), s);
    }
    assert.equal(tk.decode([1, 9038, 2]), 'Once');
    assert.equal(tk.decode([1, 9038, 2], { skipSpecial: false }), '<s> Once</s>');
    assert.throws(
      () => tk.decode([32000]),
      (e: unknown) => isSiftError(e, 'INVALID_ARGUMENT'),
    );
  });

  test('stream decoder: pushes + flush equal decode() of every prefix; split characters are held back', async () => {
    for (const s of TEXTS) {
      const ids = await tk.encode(s);
      for (let n = 0; n <= ids.length; n++) {
        const sd = tk.createStreamDecoder();
        let out = '';
        for (const id of ids.slice(0, n)) {
          const piece = sd.push(id);
          assert.ok(
            !piece.includes('\uFFFD'),
            `replacement char mid-stream in ${JSON.stringify(s)}: ${JSON.stringify(piece)}`,
          );
          out += piece;
        }
        const whole = tk.decode(ids.slice(0, n));
        const msg = `${JSON.stringify(s)}, first ${n} ids`;
        assert.ok(tk.decode(ids).startsWith(out), msg);
        const tail = sd.flush();
        if (!whole.includes('\uFFFD')) assert.equal(out + tail, whole, msg);
        // Cut mid-character: only the loose bytes flush as U+FFFD (HF's decode() blanks the whole byte run).
        else assert.match(tail, /^\uFFFD+$/, msg);
      }
    }
  });

  test('stream decoder: an emoji split over four byte tokens comes out whole, once', async () => {
    const ids = await tk.encode('Hi 😀 there', { addBos: false });
    const pieces = ids.map((id) => tk.idToToken(id));
    assert.ok(pieces.includes('<0xF0>'), `expected byte fallback, got ${pieces.join(' ')}`);
    const sd = tk.createStreamDecoder();
    const outs = ids.map((id) => sd.push(id));
    const emojiAt = pieces.indexOf('<0x80>');
    assert.deepEqual(outs.slice(emojiAt - 3, emojiAt), ['', '', '']);
    assert.equal(outs[emojiAt], '😀');
    assert.equal(outs.join('') + sd.flush(), 'Hi 😀 there');
    // Cut mid-character: flush gives what decode gives (replacement chars), never more.
    const sd2 = tk.createStreamDecoder();
    const cut = ids.slice(0, emojiAt - 1);
    const text = cut.map((id) => sd2.push(id)).join('');
    assert.equal(text, 'Hi ');
    assert.equal(text + sd2.flush(), tk.decode(cut));
    // A complete emoji followed by half of another: the first streams whole, only the loose bytes flush as U+FFFD.
    const two = await tk.encode('😀👍', { addBos: false });
    const sd3 = tk.createStreamDecoder();
    assert.equal(
      two
        .slice(0, -2)
        .map((id) => sd3.push(id))
        .join(''),
      '😀',
    );
    assert.equal(sd3.flush(), '\uFFFD\uFFFD');
  });

  test('stream decoder with the prompt as context keeps the first word\u2019s leading space', async () => {
    const prompt = await tk.encode('Once upon a time');
    const full = await tk.encode('Once upon a time there was a girl');
    const sd = tk.createStreamDecoder({ context: prompt });
    const out =
      full
        .slice(prompt.length)
        .map((id) => sd.push(id))
        .join('') + sd.flush();
    assert.equal(out, ' there was a girl');
    const bare = tk.createStreamDecoder();
    assert.equal(
      full
        .slice(prompt.length)
        .map((id) => bare.push(id))
        .join('') + bare.flush(),
      'there was a girl',
    );
  });

  test('special ids are skipped in the stream unless asked for', () => {
    const sd = tk.createStreamDecoder();
    assert.equal([1, 9038, 2501, 2].map((id) => sd.push(id)).join('') + sd.flush(), 'Once upon');
    assert.throws(
      () => sd.push(-1),
      (e: unknown) => isSiftError(e, 'INVALID_ARGUMENT'),
    );
  });
});
