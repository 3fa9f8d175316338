/**
 * Attention-mass recall of hierarchical page selection on real stories15M keys (bench/recall.ts, `sift bench
 * recall`): a 2048-token document of stories the model samples itself, pages of 16 tokens, the queries of its last 8
 * tokens. With a hierarchy whose levels really drop blocks at this length (the engine's at budget 128: level 1; a
 * tight one, 2 pages per level-1 block, 4 of those per level-2 block, margin 2: both levels), the pages the descent
 * keeps must carry (nearly) the attention mass the exhaustive top-k carries; a selection that ignored the digests
 * (random pages) carries far less. The floors tell a working hierarchy from a broken one, measured on this document
 * (bench/results/MILLION.md): the engine's hierarchy keeps the exhaustive pages for every head (same 100%, p5 100%);
 * with its margin dropped to 0 the same measurement gives same 86%, p5 94%, and with the coarse bounds ignored (every
 * coarse block tied) same 53%, p5 72%; the tight one gives same 84%, p5 97% (margin 0: 66%, 93%; bounds ignored:
 * 0%, mean 17%).
 */
// run-tests: timeout 900
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { sampleStories, storyDocument } from '../../bench/agreement.js';
import { runRecall } from '../../bench/recall.js';
import { engineConfig } from '../../config/engine.js';
import { ModelRunner } from '../../model/runner.js';
import { testGpu } from '../helpers/gpu.js';
import { storiesDir } from '../helpers/stories.js';

const TOKENS = 2048;
let engineP: Promise<ModelRunner> | undefined;
after(async () => (await engineP)?.destroy());

async function setup(): Promise<{ engine: ModelRunner; doc: number[] }> {
  engineP ??= (async () => {
    const cfg = engineConfig({
      flags: { pageSize: 16, kvCacheMib: 32, maxBatchTokens: 256, maxSeqs: 4, maxContext: TOKENS + 64 },
    });
    return ModelRunner.load(await storiesDir(), cfg, { gpu: await testGpu() });
  })();
  const engine = await engineP;
  const stories = await sampleStories(engine, 4, 200, 1000);
  return { engine, doc: storyDocument(stories, TOKENS, 11) };
}

test('hierarchical selection keeps the attention mass of exhaustive selection on real stories15M keys', async () => {
  const { engine, doc } = await setup();
  for (const [hierarchy, floor] of [
    [undefined, { mean: 0.99, p5: 0.99, same: 0.97 }],
    [
      { fan1: 2, fan2: 4, margin: 2 },
      { mean: 0.97, p5: 0.95, same: 0.75 },
    ],
  ] as const) {
    const r = await runRecall(engine, doc, { tokens: TOKENS, queries: 8, budgets: [128], hierarchy }, 'stories');
    const x = r.rows[0];
    const what = `hierarchy ${JSON.stringify(r.hierarchy)} budget 128 (${x.kept} of ${x.pages} pages)`;
    assert.ok(x.prunedLevels.length > 0, `${what}: the descent drops blocks at this length`);
    if (hierarchy) assert.deepEqual(x.prunedLevels, ['level 2', 'level 1'], what);
    assert.ok(x.recall.mean >= floor.mean, `${what}: mean recall ${x.recall.mean}`);
    assert.ok(x.recall.p5 >= floor.p5, `${what}: 5th percentile recall ${x.recall.p5}`);
    assert.ok(x.sameSelection >= floor.same, `${what}: same pages ${x.sameSelection}`);
    // the measurement discriminates: random pages (with sink and newest) keep far less than the exhaustive top-k
    assert.ok(
      x.massRandom.mean < x.massExhaustive.mean - 0.1,
      `${what}: random ${x.massRandom.mean} vs exhaustive ${x.massExhaustive.mean}`,
    );
  }
});
