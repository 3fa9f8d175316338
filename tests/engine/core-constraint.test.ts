/**
 * Constrained and host-processed requests in the engine core, over the CPU executor (no GPU): a constraint's mask
 * holds on every sampled token (batched beside unconstrained requests, which are unchanged by it), it is told the
 * remaining budget and each chosen token, and disposed once; logit_bias reaches the sampler (as the step's sparse
 * bias, which the executor samples with); entries of requests that sample on the host (min_p, a repetition
 * penalty) are marked needsLogits for the executor, and their spec says so.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { TokenConstraint } from '../../engine/client.js';
import { EngineCore } from '../../engine/core.js';
import type { TokenMask } from '../../engine/logits.js';
import type { ExecuteInput } from '../../model/executor.js';
import { checkpointDir, collect, cpuExecutor, greedy, makeCore, Rng, randomPrompt, VARIANT } from './core-helpers.js';

let dir = '';
let cleanup = () => {};
before(() => {
  ({ dir, cleanup } = checkpointDir());
});
after(() => cleanup());

/** Allows only ids in `allowed`; with `remaining` <= 1 only `closer` (the stop id). Records what it was told. */
class SetConstraint implements TokenConstraint {
  remainingSeen: number[] = [];
  accepted: number[] = [];
  disposed = 0;
  constructor(
    private readonly allowed: number[],
    private readonly closer: number,
  ) {}
  async nextMask(remaining: number): Promise<TokenMask> {
    this.remainingSeen.push(remaining);
    const m = new Int32Array(Math.ceil(VARIANT.vocab / 32));
    for (const id of remaining <= 1 ? [this.closer] : this.allowed) m[id >> 5] |= 1 << (id & 31);
    return m;
  }
  async take(id: number): Promise<number> {
    if (id !== this.closer) this.accepted.push(id);
    return id;
  }
  dispose(): void {
    this.disposed++;
  }
}

test('a constraint masks every sampled token, sees the remaining budget, and leaves batch neighbours alone', async () => {
  const rng = new Rng(31);
  const prompt = randomPrompt(rng, 7);
  const other = randomPrompt(rng, 12);
  const core = makeCore(dir);
  try {
    const alone = await collect(core.submit(greedy('alone', other, 6)));
    const c = new SetConstraint([10, 20, 30, 40], 2);
    const [a, b] = await Promise.all([
      collect(
        core.submit(
          greedy('c', prompt, 6, {
            stopIds: [2],
            constraint: c,
            sampling: { temperature: 1, topK: 0, topP: 1, seed: 4 },
          }),
        ),
      ),
      collect(core.submit(greedy('n', other, 6))),
    ]);
    assert.deepEqual(b.tokens, alone.tokens, 'the unconstrained neighbour is unchanged');
    assert.equal(a.tokens.length, 5);
    for (const t of a.tokens) assert.ok([10, 20, 30, 40].includes(t), `token ${t} outside the mask`);
    assert.equal(a.done.finishReason, 'stop', 'the closer (a stop id) ended it at the last allowed position');
    assert.deepEqual(c.remainingSeen, [6, 5, 4, 3, 2, 1]);
    assert.deepEqual(c.accepted, a.tokens);
    assert.equal(c.disposed, 1);
  } finally {
    await core.shutdown(0);
  }
});

test("logit_bias reaches the sampler as the spec's bias; host-sampled entries are marked needsLogits", async () => {
  const rng = new Rng(32);
  const prompt = randomPrompt(rng, 9);
  const exec = cpuExecutor(dir);
  const marks: Array<[string | number, boolean | undefined]> = [];
  const withBias: boolean[] = [];
  const run = exec.execute.bind(exec);
  exec.execute = (input: ExecuteInput) => {
    for (const e of input.entries) {
      if (!e.sample) continue;
      marks.push([e.seqId, e.needsLogits]);
      assert.equal(e.needsLogits, e.sampling?.onHost === true || e.sampling?.returnLogits === true);
      withBias.push((e.sampling?.bias?.ids.length ?? 0) > 0);
    }
    return run(input);
  };
  const core = EngineCore.create(exec);
  try {
    const plain = await collect(core.submit(greedy('plain', prompt, 4)));
    const plainMarks = marks.splice(0);
    assert.ok(plainMarks.length === 4 && plainMarks.every(([, m]) => m === false));
    assert.ok(withBias.splice(0).every((x) => !x));
    const banned = plain.tokens[0];
    const biased = await collect(core.submit(greedy('bias', prompt, 4, { logitBias: new Map([[banned, -100]]) })));
    assert.notEqual(biased.tokens[0], banned);
    assert.ok(!biased.tokens.includes(banned));
    // an additive bias: sampled by the executor with the spec's bias, no logits row needed
    assert.ok(marks.splice(0).every(([, m]) => m === false));
    assert.ok(withBias.length === 4 && withBias.splice(0).every((x) => x));
    const forced = await collect(core.submit(greedy('force', prompt, 3, { logitBias: new Map([[77, 100]]) })));
    assert.deepEqual(forced.tokens, [77, 77, 77]);
    marks.splice(0);
    // min_p and a repetition penalty are host rules: the row comes back, the host samples it
    const sampled = { temperature: 1, topK: 0, topP: 1, seed: 7 };
    await collect(core.submit({ ...greedy('minp', prompt, 3), sampling: sampled, minP: 0.2 }));
    await collect(core.submit({ ...greedy('rep', prompt, 3), sampling: sampled, repetitionPenalty: 1.3 }));
    assert.ok(marks.length === 6 && marks.every(([, m]) => m === true));
  } finally {
    await core.shutdown(0);
  }
});
