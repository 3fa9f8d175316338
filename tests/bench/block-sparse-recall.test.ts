/**
 * Floors on the attention-mass recall of hierarchical block selection (tests/bench/block-sparse-prefill.ts'
 * measurement) on the last 512-token chunk of a 4k prompt, topBlocks 6, with a tight hierarchy (groups of 4 blocks,
 * margin 2: 8 of the ~15 groups have their blocks scored, so the coarse level really drops blocks): within 0.01 of the
 * flat selection where block topics repeat (topics8) and all of it where 3 blocks carry the query's topic (planted3).
 * Ignoring the coarse digests (keeping the lowest groups) or dropping the margin falls below them (bench/results/
 * PREFILL.md, "What the recall test catches").
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FLAT_BLOCKS } from '../../shaders/block_select.js';
import { testGpu } from '../helpers/gpu.js';
import { measureRecall } from './block-sparse-prefill.js';

test('hierarchical block selection keeps the flat selection recall (groups of 4, margin 2, 4k prompt)', async () => {
  const gpu = await testGpu();
  const tight = { groupBlocks: 4, margin: 2 };
  const got: Record<string, number> = {};
  for (const scenario of ['topics8', 'planted3'] as const) {
    const flat = await measureRecall(gpu, { L: 4096, scenario, topBlocks: 6, hierarchy: FLAT_BLOCKS });
    const hier = await measureRecall(gpu, { L: 4096, scenario, topBlocks: 6, hierarchy: tight });
    got[`${scenario} flat`] = flat.recall;
    got[`${scenario} hierarchical`] = hier.recall;
    assert.ok(Math.abs(hier.kept - flat.kept) < 1e-9, `${scenario}: kept ${hier.kept} vs ${flat.kept}`);
  }
  if (process.env.SIFT_TEST_VERBOSE) console.log(got);
  assert.ok(got['planted3 flat'] >= 0.99, JSON.stringify(got));
  assert.ok(got['planted3 hierarchical'] >= 0.99, JSON.stringify(got));
  assert.ok(got['topics8 hierarchical'] >= got['topics8 flat'] - 0.01, JSON.stringify(got));
});
