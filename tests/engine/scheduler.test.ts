/**
 * The scheduler alone (no GPU): a fake engine commits every scheduled chunk and appends a made-up token to each
 * sequence that samples, so budgets, decode-first ordering, FCFS admission by free pages, recompute preemption and
 * prefix-cache skips can be checked step by step against the KV cache manager's own state.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSiftError } from '../../config/errors.js';
import { type ScheduleOutput, Scheduler, type SeqState } from '../../engine/scheduler.js';
import { KvCacheManager } from '../../kvcache/index.js';

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

function setup(
  numPages: number,
  opts: Partial<{ maxBatchTokens: number; maxSeqs: number; maxWaiting: number; prefix: boolean }> = {},
) {
  const kv = new KvCacheManager({ numPages, pageSize: 4, logicalPageSize: 4, enablePrefixCache: opts.prefix ?? true });
  const s = new Scheduler(kv, {
    maxBatchTokens: opts.maxBatchTokens ?? 8,
    maxSeqs: opts.maxSeqs ?? 8,
    maxWaiting: opts.maxWaiting ?? 16,
  });
  return { kv, s };
}

/** One step of a fake engine: commit every chunk; sequences that sample get token 1000 + step until `len`. */
function fakeStep(s: Scheduler, step: number, maxLen: Map<SeqState, number>): ScheduleOutput {
  const out = s.schedule();
  for (const e of out.scheduled) s.commit(e);
  for (const e of out.scheduled) {
    if (!e.sample) continue;
    e.seq.tokens.push(1000 + step);
    if (e.seq.tokens.length >= (maxLen.get(e.seq) ?? Number.POSITIVE_INFINITY)) s.finish(e.seq);
  }
  return out;
}

test('a long prefill is chunked around a running decode: every step within budget, the decode never skipped', () => {
  const { kv, s } = setup(64, { maxBatchTokens: 8 });
  const dec = s.newSeq(range(5));
  s.add(dec);
  const maxLen = new Map([[dec, 40]]);
  fakeStep(s, 0, maxLen); // dec prefilled (5 tokens) and samples
  const long = s.newSeq(range(50, 100));
  s.add(long);
  maxLen.set(long, 52);
  let chunks = 0;
  for (let step = 1; long.status !== 'finished' && step < 100; step++) {
    const out = fakeStep(s, step, maxLen);
    assert.ok(out.numTokens <= 8, `step ${step}: ${out.numTokens} tokens`);
    assert.equal(
      out.scheduled.reduce((a, e) => a + e.numTokens, 0),
      out.numTokens,
    );
    if (dec.status !== 'finished') {
      const d = out.scheduled.find((e) => e.seq === dec);
      assert.ok(d && d.numTokens === 1, `step ${step}: the decode got no token`);
      assert.equal(out.scheduled[0].seq, dec, 'decodes come first');
    }
    const l = out.scheduled.find((e) => e.seq === long);
    if (l && !l.sample) {
      chunks++;
      assert.equal(l.numTokens, 7, 'the prefill chunk takes what the decode left');
    }
  }
  assert.equal(long.status, 'finished');
  assert.equal(chunks, Math.floor(50 / 7));
  s.finish(dec);
  assert.equal(kv.stats().pagesUsed, 0);
});

test('FCFS admission by free pages: the head of the queue blocks the ones behind it', () => {
  const { kv, s } = setup(6, { maxBatchTokens: 64 }); // 24 slots
  const a = s.newSeq(range(12)); // 3 pages
  const b = s.newSeq(range(12, 100)); // 3 pages
  const c = s.newSeq(range(4, 200)); // 1 page
  for (const q of [a, b, c]) s.add(q);
  const out = s.schedule();
  assert.deepEqual(
    out.scheduled.map((e) => e.seq),
    [a, b],
  );
  assert.deepEqual(s.waiting, [c], 'c would fit no page: the pool is full');
  assert.equal(kv.stats().pagesUsed, 6);
  s.finish(a);
  const out2 = s.schedule();
  assert.deepEqual(out2.admitted, [c]);
});

test('maxSeqs bounds the running batch and QUEUE_FULL bounds the waiting queue', () => {
  const { s } = setup(64, { maxSeqs: 2, maxWaiting: 3 });
  for (let i = 0; i < 3; i++) s.add(s.newSeq([i + 1]));
  assert.throws(
    () => s.add(s.newSeq([9])),
    (e) => isSiftError(e, 'QUEUE_FULL'),
  );
  const out = s.schedule();
  assert.equal(out.scheduled.length, 2);
  assert.equal(s.running.length, 2);
  assert.equal(s.waiting.length, 1);
});

test('out of pages during decode: the newest sequence is preempted to the front of the queue and recomputed', () => {
  const { kv, s } = setup(4, { maxBatchTokens: 16, prefix: false }); // 16 slots
  const a = s.newSeq(range(4)); // fills page 0 exactly
  const b = s.newSeq(range(4, 50));
  const maxLen = new Map([
    [a, 10],
    [b, 11],
  ]);
  s.add(a);
  s.add(b);
  fakeStep(s, 0, maxLen); // both prefilled: 2 pages used, both need a new page for their next token
  fakeStep(s, 1, maxLen); // both grow: 4 pages used
  assert.equal(kv.stats().pagesUsed, 4);
  assert.equal(s.preemptions, 0);
  // both hold 2 pages (8 slots); position 8 needs a 3rd page for a: b must give its pages back
  let preemptedAt = -1;
  for (let step = 2; step < 10 && preemptedAt < 0; step++) {
    const out = fakeStep(s, step, maxLen);
    if (out.preempted.length) {
      preemptedAt = step;
      assert.deepEqual(out.preempted, [b]);
      assert.equal(b.status, 'waiting');
      assert.equal(b.numComputed, 0);
      assert.equal(s.waiting[0], b, 'front of the queue');
      assert.equal(b.tokens.length, 9, 'the preempted sequence keeps its prompt and its output');
      assert.deepEqual(
        out.scheduled.map((e) => e.seq),
        [a],
      );
      assert.equal(out.admitted.length, 0, 'no admission in a step that preempted');
    }
  }
  assert.ok(preemptedAt > 0);
  assert.equal(s.preemptions, 1);
  // run to the end: b comes back, recomputes its 7 tokens as a prefill and finishes
  const bTokensBefore = b.tokens.slice();
  const bKinds: string[] = [];
  for (let step = 10; step < 40 && s.hasWork; step++) {
    const out = fakeStep(s, step, maxLen);
    const eb = out.scheduled.find((e) => e.seq === b);
    if (eb) bKinds.push(eb.kind);
    if (eb && out.admitted.includes(b)) assert.equal(eb.numTokens, 9, 'recompute prefill of prompt + output');
  }
  // the recompute covers prompt AND output tokens: a prefill; the token it samples then decodes as usual
  assert.deepEqual(bKinds, ['prefill', 'decode']);
  assert.equal(a.status, 'finished');
  assert.equal(b.status, 'finished');
  assert.deepEqual(b.tokens.slice(0, 9), bTokensBefore);
  assert.equal(kv.stats().pagesUsed, 0);
});

test('a lone sequence that cannot grow preempts itself rather than failing', () => {
  const { s } = setup(2, { maxBatchTokens: 16 });
  const a = s.newSeq(range(8)); // both pages
  s.add(a);
  fakeStep(s, 0, new Map());
  const out = s.schedule(); // needs a third page
  assert.deepEqual(out.preempted, [a]);
  assert.equal(out.scheduled.length, 0);
  assert.equal(s.waiting[0], a);
});

test('prefix-cache hits are skipped: the repeat starts its prefill after the cached pages', () => {
  const { kv, s } = setup(32, { maxBatchTokens: 64 });
  const prompt = range(10, 7);
  const a = s.newSeq(prompt.slice());
  s.add(a);
  fakeStep(s, 0, new Map([[a, 11]]));
  assert.equal(a.status, 'finished');
  const b = s.newSeq(prompt.slice());
  s.add(b);
  const out = s.schedule();
  assert.equal(b.numCached, 8, 'two full pages of 4 hit (the last token is always computed)');
  assert.deepEqual(
    out.scheduled.map((e) => [e.start, e.numTokens]),
    [[8, 2]],
  );
  assert.equal(kv.stats().prefixHits, 8);
  // with the cache off nothing is skipped
  const off = setup(32, { maxBatchTokens: 64, prefix: false });
  const c = off.s.newSeq(prompt.slice());
  off.s.add(c);
  fakeStep(off.s, 0, new Map([[c, 11]]));
  const d = off.s.newSeq(prompt.slice());
  off.s.add(d);
  assert.deepEqual(
    off.s.schedule().scheduled.map((e) => [e.start, e.numTokens]),
    [[0, 10]],
  );
});

test('finish frees pages at once, mid-prefill or waiting', () => {
  const { kv, s } = setup(32, { maxBatchTokens: 4 });
  const a = s.newSeq(range(20));
  const b = s.newSeq(range(3));
  s.add(a);
  s.add(b);
  const out = s.schedule();
  assert.equal(out.scheduled.length, 1, 'a takes the whole budget');
  s.commit(out.scheduled[0]);
  assert.ok(kv.stats().pagesUsed >= 5);
  s.finish(a);
  s.finish(b);
  assert.equal(kv.stats().pagesUsed, 0);
  assert.equal(s.hasWork, false);
  // a chunk committed after its sequence finished is ignored
  s.commit(out.scheduled[0]);
  assert.equal(kv.stats().pagesUsed, 0);
});

test("each entry's kind is decided once: decode = the one token past the prompt; chunks, remainders, recomputes prefill", () => {
  // prompt 9 in chunks of 8 leaves a 1-token remainder that is still prompt: a prefill
  const { s } = setup(64, { maxBatchTokens: 8, prefix: false });
  const a = s.newSeq(range(9));
  s.add(a);
  const maxLen = new Map([[a, 12]]);
  const kinds = (out: ScheduleOutput) => out.scheduled.map((e) => [e.kind, e.numTokens, e.sample]);
  assert.deepEqual(kinds(fakeStep(s, 0, maxLen)), [['prefill', 8, false]]);
  assert.deepEqual(kinds(fakeStep(s, 1, maxLen)), [['prefill', 1, true]], 'the last prompt token: a prefill');
  assert.deepEqual(kinds(fakeStep(s, 2, maxLen)), [['decode', 1, true]], 'the sampled token: a decode');
  // decodes come first, before a prefill of an older sequence admitted earlier
  const b = s.newSeq(range(20, 100));
  s.add(b);
  maxLen.set(b, 22);
  const out = fakeStep(s, 3, maxLen);
  assert.deepEqual(
    out.scheduled.map((e) => [e.seq === a ? 'a' : 'b', e.kind]),
    [
      ['a', 'decode'],
      ['b', 'prefill'],
    ],
  );
  // a 1-token prompt's first step is a prefill that samples
  const fresh = setup(64).s;
  fresh.add(fresh.newSeq([5]));
  assert.deepEqual(kinds(fresh.schedule()), [['prefill', 1, true]]);
});
