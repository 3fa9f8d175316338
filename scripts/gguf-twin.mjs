#!/usr/bin/env node
// Writes the GGUF twin of an HF model directory with the tests' GGUF writer (tests/helpers/gguf-writer.ts, compiled):
// llama metadata and tensor names, q/k rows interleaved as llama.cpp's converter writes them, the tokenizer as
// tokenizer.ggml.* keys; every matrix in TYPE (F32, F16, BF16, Q8_0, Q4_0, Q5_0; Q4_K / Q6_K need rows of 256k values).
// Usage (after `npm run build`): node scripts/gguf-twin.mjs MODEL_DIR OUT.gguf [TYPE=F32]
// bench/results/QUANT.md quantizes the F32 twin of stories15M with llama.cpp's own quantizer
// (scripts/llama-quantize.mjs; earlier with ggml's, tests/fixtures/ggml-tool.c).
import fs from 'node:fs';
import path from 'node:path';

const [dir, out, type = 'F32'] = process.argv.slice(2);
if (!dir || !out) {
  console.error('usage: node scripts/gguf-twin.mjs MODEL_DIR OUT.gguf [F32|F16|BF16|Q8_0|Q4_0|Q5_0|Q4_K|Q6_K]');
  process.exit(2);
}
const dist = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'dist');
const { openCheckpoint } = await import(path.join(dist, 'checkpoint/checkpoint.js'));
const { ggufTwin, sentencePieceKeysFromTokenizerJson, writeGguf } = await import(
  path.join(dist, 'tests/helpers/gguf-writer.js')
);
const hf = openCheckpoint(dir);
const tok = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
const { metadata, tensors } = ggufTwin(hf, {
  arch: 'llama',
  typeOf: () => type,
  tokenizer: sentencePieceKeysFromTokenizerJson(tok),
});
hf.close();
writeGguf(out, metadata, tensors);
console.log(`${out}: ${tensors.length} tensors, ${type}`);
