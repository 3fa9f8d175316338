#!/usr/bin/env node
// What the engine step's WebGPU error checks cost (shaders/faults.ts): decode steps of the default model through
// ModelRunner.execute with error scopes on every step vs never (uncaptured errors are checked in both), alternating
// blocks of steps so that machine load hits both alike. Prints per-step medians and the difference.
// Usage: node scripts/bench-error-scopes.mjs [rounds=10] [steps per block=20] [rows=1,8]   (after `npm run build`)
import { resolveModel } from '../dist/checkpoint/pull.js';
import { engineConfig } from '../dist/config/engine.js';
import { ModelRunner } from '../dist/model/runner.js';
import { FaultCheck } from '../dist/shaders/faults.js';

const rounds = Number(process.argv[2] ?? 10);
const block = Number(process.argv[3] ?? 20);
const rowsList = (process.argv[4] ?? '1,8').split(',').map(Number);
const dir = await resolveModel('stories15M', { autoPull: true });
const cfg = engineConfig({ flags: { maxSeqs: Math.max(...rowsList), kvCacheMib: 64 } });
const runner = await ModelRunner.load(dir, cfg);
const pageSize = runner.limits.kv.pageSize;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = [];
for (const rows of rowsList) {
  // each row: a 64-token prompt in its own page, then decode steps at position 64 (the same slot rewritten)
  const entries = [];
  for (let r = 0; r < rows; r++) {
    const pages = [2 * r, 2 * r + 1];
    const prompt = Array.from({ length: 64 }, (_, i) => 1 + ((i * 37 + r) % 1000));
    await runner.execute({ entries: [{ kind: 'prefill', seqId: r, start: 0, tokens: prompt, pages, sample: true }] });
    entries.push({ kind: 'decode', seqId: r, start: 64, tokens: [42], pages, sample: true, tokenBudget: 4096 });
  }
  const time = { scoped: [], unscoped: [] };
  for (let k = 0; k < rounds; k++) {
    for (const mode of k % 2 === 0 ? ['scoped', 'unscoped'] : ['unscoped', 'scoped']) {
      runner.faults = new FaultCheck(runner.gpu, mode === 'scoped' ? 1 : 0);
      for (let s = 0; s < block; s++) {
        const t0 = performance.now();
        await runner.execute({ entries });
        time[mode].push(performance.now() - t0);
      }
    }
  }
  const a = median(time.unscoped);
  const b = median(time.scoped);
  results.push({
    rows,
    steps: time.scoped.length,
    unscopedMs: a,
    scopedMs: b,
    costMs: b - a,
    costPct: ((b - a) / a) * 100,
  });
  console.log(
    `rows ${rows}: per step, uncaptured-only ${a.toFixed(2)} ms, with error scopes ${b.toFixed(2)} ms: +${(b - a).toFixed(2)} ms (${(((b - a) / a) * 100).toFixed(1)}%) over ${time.scoped.length} steps each`,
  );
}
console.log(
  JSON.stringify({ date: new Date().toISOString(), pageSize, adapter: runner.gpu.caps.adapterName, results }),
);
runner.destroy();
