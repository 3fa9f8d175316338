#!/usr/bin/env node
// Runs every compiled test file (dist/tests/**/*.test.js) with node's test runner, one file at a time, each in its
// own process with a wall-clock limit, so that a hung GPU call fails its file instead of hanging the whole run.
// Usage: node scripts/run-tests.mjs [filter...]   (filters match test file paths as substrings)
// Env: SIFT_TEST_FILE_TIMEOUT_S  seconds one file may run (default 420); a file past it is killed and counted failed.
// A test file may raise its own limit with a line `// run-tests: timeout SECONDS` in its TypeScript source.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dir = path.join(root, 'dist', 'tests');
if (!existsSync(dir)) {
  console.error('sift: dist/tests missing; run `npm run build` first (npm test does it for you).');
  process.exit(1);
}
const limitS = Number(process.env.SIFT_TEST_FILE_TIMEOUT_S ?? 420);
if (!(limitS > 0)) {
  console.error(
    `sift: SIFT_TEST_FILE_TIMEOUT_S must be a number of seconds > 0 (got ${process.env.SIFT_TEST_FILE_TIMEOUT_S})`,
  );
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

/** The file's own limit (`// run-tests: timeout N` in its source), else the global one. */
function limitOf(file) {
  const src = path.join(root, path.relative(path.join(root, 'dist'), file)).replace(/\.js$/, '.ts');
  const m = /^\/\/ run-tests: timeout (\d+)$/m.exec(readFileSync(src, 'utf8'));
  return m ? Math.max(limitS, Number(m[1])) : limitS;
}

/** Runs one file; resolves with its exit status and the pass/fail counts its reporter printed. */
function runFile(file) {
  const fileLimitS = limitOf(file);
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['--test', '--test-reporter=spec', file], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (b) => {
      process.stdout.write(b);
      out += b.toString();
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, fileLimitS * 1000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const count = (k) => Number(out.match(new RegExp(`^ℹ ${k} (\\d+)`, 'm'))?.[1] ?? 0);
      resolve({
        file: path.relative(root, file),
        code: timedOut ? null : code,
        timedOut,
        limitS: fileLimitS,
        pass: count('pass'),
        fail: count('fail'),
        seconds: (performance.now() - t0) / 1000,
      });
    });
  });
}

// One file at a time: lavapipe already uses every core, so parallel GPU files only contend.
const results = [];
for (const f of chosen) results.push(await runFile(f));

const bad = results.filter((r) => r.code !== 0);
const pass = results.reduce((n, r) => n + r.pass, 0);
const fail = results.reduce((n, r) => n + r.fail, 0);
const total = results.reduce((n, r) => n + r.seconds, 0);
console.log(`\nsift tests: ${results.length} files, ${pass} passed, ${fail} failed, ${total.toFixed(0)} s`);
for (const r of [...results].sort((a, b) => b.seconds - a.seconds).slice(0, 5)) {
  console.log(`  slowest: ${r.file} ${r.seconds.toFixed(1)} s`);
}
for (const r of bad) {
  console.log(
    `  FAILED: ${r.file}${r.timedOut ? ` (killed after the ${r.limitS} s per-file limit)` : ` (exit ${r.code})`}`,
  );
}
process.exit(bad.length ? 1 : 0);
