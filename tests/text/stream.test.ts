/**
 * TextStream on a small tokenizer written by the test helpers (no download): released text, hold-back, stop
 * strings across token boundaries, UTF-8 split over byte tokens, and the token count that goes with the text.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TextDelta } from '../../text/stream.js';
import { Rng } from '../helpers/rng.js';
import { STORY, storyText } from '../helpers/tiny-text.js';

const text = storyText();
const tk = text.tokenizer;

interface Run {
  deltas: TextDelta[];
  released: string;
  tokens: number;
}

/** Pushes `ids` through a stream, then finishes it; `check` sees the stream after every push. */
function run(ids: number[], opts: { context?: number[]; stop?: string[] } = {}, check?: (r: Run) => void): Run {
  const s = text.stream(opts.context ?? [], opts.stop ?? []);
  const r: Run = { deltas: [], released: '', tokens: 0 };
  const add = (d: TextDelta) => {
    r.deltas.push(d);
    r.released += d.text;
    r.tokens += d.tokens;
  };
  for (const id of ids) {
    add(s.push(id));
    check?.(r);
  }
  add(s.finish());
  assert.equal(r.released, s.text, 'everything released once finished');
  return r;
}

/**
 * The reference cut: decode each prefix of the ids (what a reader has after each token); at the first prefix
 * whose text contains a stop string, the text ends before the earliest stop string in it.
 */
function referenceCut(ids: number[], context: number[], stops: string[]): { text: string; tokens: number } {
  const ctx = tk.decode(context);
  for (let k = 1; k <= ids.length; k++) {
    const t = tk.decode([...context, ...ids.slice(0, k)]).slice(ctx.length);
    const at = Math.min(...stops.map((s) => (t.includes(s) ? t.indexOf(s) : Infinity)));
    if (at !== Infinity) {
      // Tokens whose text starts before the cut.
      // A token's text starts after the complete characters before it (loose bytes are not text yet).
      const start = (n: number) => tk.decode([...context, ...ids.slice(0, n)]).replace(/\uFFFD+$/, '').length;
      let n = 0;
      while (n < k && start(n) - ctx.length < at) n++;
      return { text: t.slice(0, at), tokens: n };
    }
  }
  return { text: tk.decode([...context, ...ids]).slice(ctx.length), tokens: ids.length };
}

describe('TextStream', () => {
  test('no stop strings: the text of every token as it arrives, equal to decode()', async () => {
    const ids = await tk.encode(STORY, { addBos: false });
    const r = run(ids, {}, (p) => assert.equal(p.tokens, p.deltas.length, 'each word token is released at once'));
    assert.equal(r.released, STORY);
    assert.equal(r.tokens, ids.length);
    assert.equal(r.deltas[0].text, 'Once');
    assert.equal(r.deltas[1].text, ' upon');
  });

  test('the prompt as context keeps the first word\u2019s leading space; unknown context ids are ignored', async () => {
    const prompt = await text.encodePrompt('Once upon a');
    const ids = await tk.encode('time, there', { addBos: false });
    assert.equal(run(ids, { context: prompt }).released, ' time, there');
    assert.equal(run(ids).released, 'time, there');
    assert.equal(run(ids, { context: [...prompt, tk.vocabSize + 5] }).released, ' time, there');
  });

  test('a stop string across a token boundary: none of it is released, the text ends before it', async () => {
    const ids = await tk.encode(STORY, { addBos: false });
    // "e w" spans " there" | " was": " there" must be held back until " was" shows the stop string follows.
    const stop = 'e w';
    const s = text.stream([], [stop]);
    let released = '';
    for (const id of ids) {
      released += s.push(id).text;
      assert.ok('Once upon a time, ther'.startsWith(released), `released ${JSON.stringify(released)}`);
      if (s.stopped) break;
    }
    assert.ok(s.stopped);
    released += s.finish().text;
    assert.equal(released, 'Once upon a time, ther');
    assert.equal(s.text, released);
    assert.deepEqual(s.push(ids[0]), { text: '', tokens: 0 }, 'ids after a stop are ignored');
  });

  test('the tokens released go with the text: tokens that start after the cut are dropped', async () => {
    const ids = await tk.encode(STORY, { addBos: false });
    const r = run(ids, { stop: ['little girl'] });
    assert.equal(r.released, 'Once upon a time, there was a ');
    // "▁little" starts with the space before the cut, so it stays (its text is partly sent); "▁girl" and later go.
    assert.equal(r.tokens, 8);
    const s = text.stream([], ['little girl']);
    for (const id of ids) s.push(id);
    assert.deepEqual(s.tokenOffsets, [0, 4, 9, 11, 17, 23, 27, 29]);
    assert.equal(run(ids, { stop: [' little girl'] }).tokens, 7, 'a cut right at a token start drops that token');
  });

  test('random stop strings: what is released is always a prefix of the final text, cut where the reference cuts', async () => {
    const rng = new Rng(11);
    const ids = await tk.encode(`${STORY} Hi 😀 café x`, { addBos: false });
    const full = tk.decode(ids);
    const context = await text.encodePrompt('Tell me a story.');
    for (let trial = 0; trial < 200; trial++) {
      const stops = Array.from({ length: 1 + Math.floor(rng.next() * 3) }, () => {
        const a = Math.floor(rng.next() * full.length);
        const len = 1 + Math.floor(rng.next() * 6);
        return rng.next() < 0.2 ? 'zq' : full.slice(a, a + len);
      }).filter((s) => s !== '' && !s.includes('\uFFFD'));
      const want = referenceCut(ids, context, stops);
      const msg = `stops ${JSON.stringify(stops)}`;
      const r = run(ids, { context, stop: stops }, (p) => {
        assert.ok(want.text.startsWith(p.released), `${msg}: released ${JSON.stringify(p.released)}`);
        assert.ok(!p.released.includes('\uFFFD'), 'no replacement char mid-stream');
      });
      assert.equal(r.released, want.text, msg);
      assert.equal(r.tokens, want.tokens, msg);
    }
  });

  test('a character split over byte tokens is released whole, once', async () => {
    const ids = await tk.encode('Hi 😀 x', { addBos: false });
    const pieces = ids.map((id) => tk.idToToken(id));
    assert.ok(pieces.includes('<0xF0>'), `expected byte fallback, got ${pieces.join(' ')}`);
    const r = run(ids);
    assert.equal(r.released, 'Hi 😀 x');
    assert.ok(r.deltas.some((d) => d.text.includes('😀')));
    assert.ok(r.deltas.every((d) => !d.text.includes('\uFFFD')));
    // Cut mid-character: finish() releases the loose bytes as U+FFFD, as decode() would.
    const cut = run(ids.slice(0, pieces.indexOf('<0xF0>') + 2));
    assert.match(cut.released, /^Hi \uFFFD+$/);
  });
});
