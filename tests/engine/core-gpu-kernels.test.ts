/**
 * The engine core over the GPU executor with the kernel variants a GPU runs (matmul, attention and sparse decode
 * with workgroup / subgroup reductions), on lavapipe: the same greedy tokens, usage and schedule as the CPU
 * executor through batching, chunked prefill, prefix-cache hits and preemption (tests/engine/stand-in.ts). Its own
 * file: warm-up compiles the workgroup variants of every token tile, slow on lavapipe.
 */
import { after, before, test } from 'node:test';
import { checkpointDir } from './core-helpers.js';
import { checkStandIn } from './stand-in.js';

let dir = '';
let cleanup = () => {};
before(() => {
  ({ dir, cleanup } = checkpointDir());
});
after(() => cleanup());

test('with the GPU kernel variants, the CPU executor gives the GPU executor greedy tokens, usage and schedule', async () => {
  await checkStandIn(dir, { variant: 'gpu' });
});
