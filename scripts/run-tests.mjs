#!/usr/bin/env node
// Runs every compiled test file (dist/tests/**/*.test.js) with node's test runner.
// Usage: node scripts/run-tests.mjs [filter...]   (filters match test file paths as substrings)
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dir = path.join(root, 'dist', 'tests');
if (!existsSync(dir)) {
  console.error('sift: dist/tests missing; run `npm run build` first (npm test does it for you).');
  process.exit(1);
}
const files = [];
const walk = (d) => {
  for (const f of readdirSync(d).sort()) {
    const p = path.join(d, f);
    if (statSync(p).isDirectory()) walk(p);
    // only compiled tests whose TypeScript source still exists (tsc never deletes outputs of removed files)
    else if (
      f.endsWith('.test.js') &&
      existsSync(path.join(root, path.relative(path.join(root, 'dist'), p)).replace(/\.js$/, '.ts'))
    ) {
      files.push(p);
    }
  }
};
walk(dir);
const filters = process.argv.slice(2);
const chosen = filters.length ? files.filter((f) => filters.some((x) => f.includes(x))) : files;
if (!chosen.length) {
  console.error(`sift: no test files match ${filters.join(' ')}`);
  process.exit(1);
}
// One file at a time: lavapipe already uses every core, so parallel GPU files only contend.
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...chosen], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(r.status ?? 1);
