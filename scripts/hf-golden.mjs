#!/usr/bin/env node
// Writes the synthetic checkpoints of tests/reference/hf-cases.ts into DIR (one folder per case) plus DIR/cases.json
// (tokens), for tests/fixtures/hf-golden.py to run through HF transformers. Needs a build (npx tsc).
// Usage: node scripts/hf-golden.mjs DIR && python tests/fixtures/hf-golden.py DIR tests/fixtures/hf-architectures.json
import fs from 'node:fs';
import path from 'node:path';

const dist = new URL('../dist/', import.meta.url);
const { writeSyntheticCheckpoint } = await import(new URL('checkpoint/synthetic.js', dist).href);
const { HF_CASES, HF_TOKENS } = await import(new URL('tests/reference/hf-cases.js', dist).href);
const dir = process.argv[2];
if (!dir) {
  console.error('usage: node scripts/hf-golden.mjs DIR');
  process.exit(2);
}
for (const [name, c] of Object.entries(HF_CASES)) writeSyntheticCheckpoint(path.join(dir, name), c.options);
fs.writeFileSync(path.join(dir, 'cases.json'), JSON.stringify({ tokens: HF_TOKENS, cases: Object.keys(HF_CASES) }));
console.log(`wrote ${Object.keys(HF_CASES).length} checkpoints to ${dir}`);
