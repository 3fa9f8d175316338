#!/usr/bin/env node
// llama.cpp's own quantizer and greedy decoding, for checking sift against them (tests/helpers/llama-cpp.ts, compiled:
// llama_model_quantize and llama_decode of the prebuilt llama.cpp in the devDependency @node-llama-cpp/linux-x64,
// called through koffi; linux-x64 only).
// Usage (after `npm run build`):
//   node scripts/llama-quantize.mjs IN.gguf OUT.gguf TYPE      TYPE: F32, F16, Q8_0, Q4_0, Q4_K_M, Q6_K (llama_ftype)
//   node scripts/llama-quantize.mjs --greedy FILE.gguf [N=48]  llama.cpp's greedy token ids from BOS (id 1)
// bench/results/QUANT.md quantizes stories15M's F32 twin (scripts/gguf-twin.mjs) with it.
import path from 'node:path';

const dist = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'dist');
const { LLAMA_FTYPE, loadLlamaCpp } = await import(path.join(dist, 'tests/helpers/llama-cpp.js'));
const args = process.argv.slice(2);
const usage = `usage: node scripts/llama-quantize.mjs IN.gguf OUT.gguf TYPE (${Object.keys(LLAMA_FTYPE).join(', ')})
       node scripts/llama-quantize.mjs --greedy FILE.gguf [N]`;
if (args[0] === '--greedy' && args[1]) {
  const n = Number(args[2] ?? 48);
  if (!Number.isInteger(n) || n < 1) {
    console.error(usage);
    process.exit(2);
  }
  const llama = loadLlamaCpp();
  console.log(JSON.stringify({ llama_cpp: llama.version, file: args[1], output_ids: llama.greedy(args[1], [1], n) }));
} else if (args.length === 3 && args[2] in LLAMA_FTYPE) {
  const llama = loadLlamaCpp();
  llama.quantize(args[0], args[1], args[2]);
  console.log(`${args[1]}: ${args[2]} by llama.cpp ${llama.version} (llama_model_quantize)`);
} else {
  console.error(usage);
  process.exit(2);
}
