/**
 * The engine core over the CPU executor (the reference forward pass, no GPU) with a tiny synthetic model:
 * continuous batching gives every request exactly the tokens it gets alone (and the reference model's greedy
 * tokens), through preemption, prefix-cache hits, chunked prefill interleaved with decode, cancellation and seeded
 * sampling. tests/engine/core-gpu.test.ts holds the CPU executor equal to the GPU one.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { openCheckpoint } from '../../checkpoint/checkpoint.js';
import type { EngineCore, StepRecord } from '../../engine/core.js';
import { ReferenceModel } from '../reference/forward.js';
import { checkpointDir, collect, greedy, makeCore, Rng, randomPrompt } from './core-helpers.js';

let dir = '';
let cleanup = () => {};
before(() => {
  ({ dir, cleanup } = checkpointDir());
});
after(() => cleanup());

/** Tokens of each request served alone, one after the other, on a fresh core with the prefix cache off. */
async function alone(reqs: Parameters<EngineCore['submit']>[0][]): Promise<number[][]> {
  const core = makeCore(dir, {}, { enablePrefixCache: false });
  try {
    const out: number[][] = [];
    for (const r of reqs) out.push((await collect(core.submit({ ...r, id: `${r.id}-alone` }))).tokens);
    return out;
  } finally {
    await core.shutdown(0);
  }
}

function referenceGreedy(prompt: number[], n: number): number[] {
  const ckpt = openCheckpoint(dir);
  try {
    const ref = new ReferenceModel(ckpt, { kvF16: true }); // the executor's K/V are f16, as on the GPU
    const V = ref.config.vocabSize;
    const last = (all: Float32Array) => all.subarray(all.length - V); // forward returns every new token's row
    let logits = last(ref.forward(prompt));
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let j = 1; j < logits.length; j++) if (logits[j] > logits[best]) best = j;
      out.push(best);
      if (i + 1 < n) logits = last(ref.forward([best]));
    }
    return out;
  } finally {
    ckpt.close();
  }
}

test('8 concurrent greedy requests of different prompt lengths equal each request served alone', async () => {
  const rng = new Rng(11);
  const lens = [1, 5, 17, 33, 9, 64, 2, 40];
  const reqs = lens.map((n, i) => greedy(`r${i}`, randomPrompt(rng, n), 6 + i));
  const want = await alone(reqs);
  // the paged executor agrees exactly with the contiguous reference on a couple of them
  for (const i of [0, 3])
    assert.deepEqual(want[i], referenceGreedy(reqs[i].promptIds, reqs[i].maxTokens), `reference ${i}`);

  const steps: StepRecord[] = [];
  const core = makeCore(dir, { maxBatchTokens: 48 }, { onStep: (s) => steps.push(s) });
  try {
    const got = await Promise.all(reqs.map((r) => collect(core.submit(r))));
    got.forEach((g, i) => {
      assert.deepEqual(g.tokens, want[i], `request ${i} (prompt ${lens[i]})`);
      assert.equal(g.done.finishReason, 'length');
      assert.equal(g.done.usage.promptTokens, lens[i]);
      assert.equal(g.done.usage.completionTokens, reqs[i].maxTokens);
      // sparse is the default mode, but these contexts fit the budget: every page is read, so it ran dense
      assert.equal(g.done.attention.requestedMode, 'sparse');
      assert.equal(g.done.attention.mode, 'dense');
      assert.ok(g.done.attention.meanTokensAttended > lens[i], 'decode attends the whole context');
      assert.equal(g.done.attention.meanTokensAttended, g.done.attention.meanContextTokens);
      assert.ok(g.done.timings.ttftMs !== null && g.done.timings.durationMs >= g.done.timings.ttftMs);
    });
    assert.ok(
      steps.some((s) => new Set(s.entries.map((e) => e.requestId)).size > 1),
      'requests shared steps',
    );
    assert.ok(steps.every((s) => s.numTokens <= 48));
    const st = core.stats();
    assert.equal(st.kvPagesUsed, 0);
    assert.equal(st.running + st.waiting, 0);
    assert.equal(
      st.generationTokens,
      reqs.reduce((a, r) => a + r.maxTokens, 0),
    );
    assert.equal(
      st.promptTokens,
      lens.reduce((a, b) => a + b, 0),
    );
    assert.equal(st.attendedShare, 1);
  } finally {
    await core.shutdown(0);
  }
});

test('a KV pool too small for the load preempts and still gives every request its tokens', async () => {
  const rng = new Rng(12);
  const reqs = Array.from({ length: 6 }, (_, i) => greedy(`p${i}`, randomPrompt(rng, 10 + 3 * i), 24));
  const want = await alone(reqs);
  // each sequence grows to 34..49 tokens (3..4 pages of 16); 8 pages hold two or three at once
  const core = makeCore(dir, {}, { numPages: 8 });
  try {
    const got = await Promise.all(reqs.map((r) => collect(core.submit(r))));
    for (const [i, g] of got.entries()) assert.deepEqual(g.tokens, want[i], `request ${i}`);
    const st = core.stats();
    assert.ok(st.preemptions > 0, 'the load needed preemption');
    assert.equal(st.kvPagesUsed, 0);
  } finally {
    await core.shutdown(0);
  }
});

test('cancelling half of 20 streaming requests mid-stream returns every page', async () => {
  const rng = new Rng(13);
  const core = makeCore(dir);
  try {
    const runs = Array.from({ length: 20 }, (_, i) => {
      const h = core.submit(greedy(`c${i}`, randomPrompt(rng, 5 + i), 30));
      let n = 0;
      return collect(h, (ev) => {
        if (ev.type === 'token' && ++n === 3 && i % 2 === 0) h.cancel();
      });
    });
    const got = await Promise.all(runs);
    got.forEach((g, i) => {
      if (i % 2 === 0) {
        assert.equal(g.done.finishReason, 'cancelled', `request ${i}`);
        assert.ok(g.tokens.length >= 3 && g.tokens.length < 30);
      } else {
        assert.equal(g.done.finishReason, 'length');
        assert.equal(g.tokens.length, 30);
      }
    });
    const st = core.stats();
    assert.equal(st.kvPagesUsed, 0, 'pages in use back at the idle baseline');
    assert.equal(st.running + st.waiting, 0);
    // cancel at once, before the first step, and mid-prefill of a long prompt
    const early = core.submit(greedy('early', randomPrompt(rng, 200), 5));
    early.cancel();
    assert.equal((await collect(early)).done.finishReason, 'cancelled');
    assert.equal(core.stats().kvPagesUsed, 0);
    const mid = core.submit(greedy('mid', randomPrompt(rng, 200), 5));
    let usedBefore = -1;
    const m = await collect(mid, (ev) => {
      if (ev.type !== 'progress' || usedBefore >= 0) return;
      usedBefore = core.stats().kvPagesUsed;
      mid.cancel();
      assert.equal(core.stats().kvPagesUsed, 0, 'pages freed at once');
    });
    assert.ok(usedBefore >= Math.ceil(200 / 16), 'the whole prompt had its pages');
    assert.equal(m.done.finishReason, 'cancelled');
    assert.equal(m.tokens.length, 0);
  } finally {
    await core.shutdown(0);
  }
});

test('a repeated prompt reuses its cached pages, skips their prefill, and gives the cold-run tokens and logprobs', async () => {
  const rng = new Rng(14);
  const prompt = randomPrompt(rng, 40); // pages of 16: 32 tokens cacheable
  const req = (id: string) => greedy(id, prompt, 8, { topLogprobs: 2 });
  const cold = makeCore(dir, {}, { enablePrefixCache: false });
  let want: Awaited<ReturnType<typeof collect>>;
  try {
    want = await collect(cold.submit(req('cold')));
  } finally {
    await cold.shutdown(0);
  }
  const steps: StepRecord[] = [];
  const core = makeCore(dir, {}, { onStep: (s) => steps.push(s) });
  try {
    const first = await collect(core.submit(req('first')));
    assert.equal(first.done.usage.cachedTokens, 0);
    const second = await collect(core.submit(req('second')));
    assert.equal(second.done.usage.cachedTokens, 32);
    const prefill = steps
      .find((s) => s.entries.some((e) => e.requestId === 'second'))
      ?.entries.find((e) => e.requestId === 'second');
    assert.deepEqual([prefill?.start, prefill?.numTokens], [32, 8], 'prefill starts after the cached pages');
    const st = core.stats();
    assert.equal(st.prefixHits, 32);
    assert.equal(st.prefixQueries, 80);
    assert.ok(st.kvPagesCached > 0);
    for (const g of [first, second]) {
      assert.deepEqual(g.tokens, want.tokens);
      const lp = (c: typeof g) => c.events.flatMap((e) => (e.type === 'token' ? [e.logprob ?? Number.NaN] : []));
      const a = lp(g);
      const b = lp(want);
      for (const [i, x] of a.entries()) assert.ok(Math.abs(x - b[i]) < 1e-4, `logprob ${i}: ${x} vs ${b[i]}`);
      const ev = g.events.find((e) => e.type === 'token');
      assert.ok(ev?.type === 'token' && ev.topLogprobs?.length === 2 && ev.topLogprobs[0].id === ev.id);
    }
  } finally {
    await core.shutdown(0);
  }
});

test('a long prompt is prefilled in chunks while another request keeps decoding every step', async () => {
  const rng = new Rng(15);
  const steps: StepRecord[] = [];
  const B = 16;
  const core = makeCore(dir, { maxBatchTokens: B }, { onStep: (s) => steps.push(s), enablePrefixCache: false });
  try {
    // alone first: its steps are prefill chunks that sample nothing, then the last chunk samples
    const longPrompt = randomPrompt(rng, 120);
    const solo = await collect(core.submit(greedy('long-solo', longPrompt, 3)));
    assert.equal(steps.length, Math.ceil(120 / B) + 2);
    steps.length = 0;
    const dec = core.submit(greedy('dec', randomPrompt(rng, 4), 40));
    let longRun: Promise<Awaited<ReturnType<typeof collect>>> | null = null;
    const decRun = collect(dec, (ev) => {
      if (ev.type === 'token' && !longRun) longRun = collect(core.submit(greedy('long', longPrompt, 3)));
    });
    const d = await decRun;
    assert.ok(longRun);
    const l = await (longRun as Promise<Awaited<ReturnType<typeof collect>>>);
    assert.equal(d.tokens.length, 40);
    assert.deepEqual(l.tokens, solo.tokens, 'interleaving does not change the tokens');
    const progress = l.events.filter((e) => e.type === 'progress');
    assert.ok(progress.length >= 7, `progress per chunk (${progress.length})`);
    const longSteps = steps.filter((s) => s.entries.some((e) => e.requestId === 'long' && e.kind === 'prefill'));
    assert.ok(longSteps.length >= 8, 'the prompt took several chunks');
    for (const s of steps) assert.ok(s.numTokens <= B, `step ${s.step}: ${s.numTokens} tokens`);
    for (const s of longSteps) {
      const e = s.entries.find((x) => x.requestId === 'dec');
      if (steps.some((t) => t.step > s.step && t.entries.some((x) => x.requestId === 'dec'))) {
        assert.ok(e?.numTokens === 1, `step ${s.step}: the decode got its token next to the prefill chunk`);
      }
    }
  } finally {
    await core.shutdown(0);
  }
});

test('seeded sampling gives the same tokens alone and in a batch', async () => {
  const rng = new Rng(16);
  const prompt = randomPrompt(rng, 7);
  const sampled = (id: string, seed: number) =>
    greedy(id, prompt, 12, {
      sampling: { temperature: 1, topK: 0, topP: 0.95, seed },
      presencePenalty: 0.5,
      frequencyPenalty: 0.3,
    });
  const core = makeCore(dir);
  try {
    const a = await collect(core.submit(sampled('solo', 42)));
    const others = Array.from({ length: 5 }, (_, i) => core.submit(sampled(`o${i}`, 100 + i)));
    const b = core.submit(sampled('batched', 42));
    const [bb] = await Promise.all([collect(b), ...others.map((h) => collect(h))]);
    assert.deepEqual(bb.tokens, a.tokens);
    const c = await collect(core.submit(sampled('other-seed', 43)));
    assert.notDeepEqual(c.tokens, a.tokens);
  } finally {
    await core.shutdown(0);
  }
});

test('steps chain on tokens not yet read back: the same tokens, stops and lengths as without overlap', async () => {
  const rng = new Rng(71);
  const lens = [3, 12, 30, 7, 50, 1];
  const reqs = lens.map((n, i) => {
    const r = greedy(`c${i}`, randomPrompt(rng, n), 5 + 4 * i);
    if (i % 2) r.sampling = { temperature: 0.9, topK: 0, topP: 0.9, seed: 100 + i };
    if (i === 4) r.presencePenalty = 0.5; // penalties need the token before the next step: no chain for it
    return r;
  });
  // stop ids that the requests do hit, from a first run
  const plain = makeCore(dir, { maxSeqs: 4 }, { overlap: false });
  const first = await Promise.all(reqs.map((r) => collect(plain.submit(r))));
  await plain.shutdown(0);
  reqs.forEach((r, i) => {
    const t = first[i].tokens;
    if (i % 3 !== 2 && t.length > 3) r.stopIds = [t[Math.floor(t.length / 2)]];
  });
  const run = async (overlap: boolean) => {
    const core = makeCore(dir, { maxSeqs: 4 }, { overlap });
    const exec = core.executor;
    const execute = exec.execute.bind(exec);
    const stats = { calls: 0, chained: 0, overlapping: 0 };
    let inFlight = 0;
    exec.execute = async (input) => {
      stats.calls++;
      if (input.entries.some((e) => e.kind === 'decode' && e.chained)) stats.chained++;
      if (inFlight > 0) stats.overlapping++;
      inFlight++;
      try {
        return await execute(input);
      } finally {
        inFlight--;
      }
    };
    try {
      return {
        got: await Promise.all(reqs.map((r) => collect(core.submit(r)))),
        stats,
        pages: core.stats().kvPagesUsed,
      };
    } finally {
      await core.shutdown(0);
    }
  };
  const off = await run(false);
  const on = await run(true);
  for (const [i, g] of on.got.entries()) {
    assert.deepEqual(g.tokens, off.got[i].tokens, `request ${i}: tokens`);
    assert.equal(g.done.finishReason, off.got[i].done.finishReason, `request ${i}: finish reason`);
    assert.deepEqual(g.done.usage, off.got[i].done.usage, `request ${i}: usage`);
  }
  assert.ok(on.got.some((g) => g.done.finishReason === 'stop') && on.got.some((g) => g.done.finishReason === 'length'));
  assert.equal(off.stats.chained, 0);
  assert.equal(off.stats.overlapping, 0);
  assert.ok(on.stats.chained > on.stats.calls / 3, `${on.stats.chained} of ${on.stats.calls} steps chained`);
  assert.ok(on.stats.overlapping >= on.stats.chained, 'a chained step is handed over while the one before runs');
  assert.equal(on.pages, 0);
});
