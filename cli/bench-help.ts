/** `sift bench` help: the suites, the overview and each suite's options (cli/bench.ts parses and runs them). */
import { ATTENTION_SHAPES } from '../bench/attention.js';
import { STEP_SAMPLINGS } from '../bench/step.js';
import { DEFAULT_MODEL } from '../checkpoint/models.js';
import { SYNTHETIC_PRESETS } from '../checkpoint/synthetic.js';

export const SUITES = ['forward', 'attention', 'decode', 'agreement', 'recall', 'quant', 'step', 'prefill'] as const;
export type Suite = (typeof SUITES)[number];

const MODEL_HELP = `  --model NAME|DIR        model to measure (default ${DEFAULT_MODEL})
  --synthetic PRESET      instead, a random-init checkpoint of a preset shape: ${Object.keys(SYNTHETIC_PRESETS).join(', ')}
                          (written once under $TMPDIR/sift-synthetic/)
  (retrieval heads only: this suite takes no --head-pattern, see sift bench --help)`;
/** --repeat, --json and --out, with the suite's default number of repeats. */
const outHelp = (repeat: number) => `  --repeat N              timed repeats after one warm-up (default ${repeat})
  --json                  print the JSON result instead of the table
  --out FILE              also write the JSON result to FILE`;

/** One line per suite, for `sift bench --help`. */
const SUMMARY: Record<Suite, string> = {
  forward: 'forward-pass prefill and decode tokens/s of a model, one sequence and batched (the default suite)',
  attention: 'kernel-level decode and prefill attention of one layer, dense vs sparse, with achieved bandwidth',
  decode: 'whole decode step time of a model, dense vs sparse, at long contexts',
  agreement: 'sparse vs dense quality on a model: greedy-token agreement and KL over long documents',
  recall: "attention mass the hierarchical page selection keeps vs exhaustive selection, on a model's real keys",
  quant: 'weight formats of one model side by side: bytes per decode step, decode tokens/s, agreement with F32',
  prefill: "where a long prompt's prefill time goes: matmul vs attention vs selection vs other, per prompt length",
  step: 'what one steady-state decode step asks of the host and the device, with a predicted H100 step time',
};

export const OVERVIEW = `usage: sift bench [SUITE] [options]

Benchmarks with a warm-up, repeats, medians and spreads; each prints a markdown table (date, adapter, machine, load
average, the command line) and writes its JSON with --out. Suites:
${SUITES.map((s) => `  ${s.padEnd(10)} ${SUMMARY[s]}`).join('\n')}

Run \`sift bench SUITE --help\` for a suite's options. The model suites (forward, decode, agreement) drive the
forward pass directly, without the engine's streaming rings: they measure retrieval heads only and take no
--head-pattern (use \`sift generate\` or \`sift serve\` for streaming heads).`;

export const HELP: Record<Suite, string> = {
  forward: `usage: sift bench [forward] [--model NAME|DIR | --synthetic PRESET] [options]

Forward pass: prefill tokens/s, decode tokens/s of one sequence, and batched decode (B sequences, one forward call).
${MODEL_HELP}
  --prompt-len LIST       prompt lengths for prefill (default 128,512, each capped at the context the model and
                          the KV cache hold: 128,256 on stories15M)
  --decode-tokens N       decode steps per repeat (default 32)
  --context LIST          context lengths at which decode is measured (default 16)
  --batch LIST            batch sizes for batched decode, e.g. 1,4,16 (default none)
${outHelp(3)}`,
  attention: `usage: sift bench attention [options]

Kernel-level attention time of one layer on random f16 K/V: decode (dense kernel, the sparse kernel with an infinite
budget, sparse with selection every step and amortized over the reuse interval) and chunked prefill (dense, also
with one query row per invocation on CPU adapters, block-sparse with ~1/8 of the blocks, Lambda, and the streaming
heads' sink + local over their ring), with achieved bandwidth.
  --shape LIST            head shapes: ${Object.keys(ATTENTION_SHAPES).join(', ')} or QxKVxD (default both presets)
  --contexts LIST         decode contexts (default 1024,4096,16384,32768; "none" to skip)
  --prefill-contexts LIST prefill contexts (default 4096,16384,32768; "none" to skip)
  --prefill-sample K      time only K of the 512-token chunks per prefill context, interpolate the rest (default 0 = all)
  --budget N              sparse token budget (default 1024)
  --reuse N               decode steps a selection is reused for (default 4)
  --peak-gbps X           memory bandwidth peak for the share-of-peak column (default 2970 on an H100, else none)
${outHelp(5)}
  --adapter NAME          WebGPU adapter by (part of) its name (env SIFT_ENGINE_ADAPTER)`,
  decode: `usage: sift bench decode [--model NAME|DIR | --synthetic PRESET] [options]

Model decode step time, dense (budget Infinity) vs sparse (--budget), at several contexts; the KV cache is filled by
a real prefill of the largest context.
${MODEL_HELP}
  --contexts LIST         contexts (default 1024,4096,16384)
  --budget N              sparse token budget (default 1024)
  --steps N               decode steps per repeat (default 8)
  --fill-tokens N         prefill only N tokens and repeat their pages in the block table up to each context
  --fill-copy             with --fill-tokens: copy the prefilled pages into distinct pages up to the largest context
                          instead (a real KV cache of that length in memory; size --kv-cache-mib for it)
  --sparse-only           measure the sparse mode only (dense at 1M tokens takes minutes a step on a CPU adapter)
${outHelp(3)}`,
  agreement: `usage: sift bench agreement [--model NAME|DIR] [options]

Sparse vs dense decode quality: per document a dense prefill and greedy dense decode, then the same steps with sparse
attention teacher-forced on the dense tokens; share of identical greedy tokens and mean KL(dense || sparse).
${MODEL_HELP}
  --budgets LIST          token budgets (default 256,512,1024)
  --lengths LIST          document lengths in tokens (default 2048,4096)
  --docs N                documents per length (default 3)
  --steps N               decode steps per document (default 64)
  --text FILE             documents are windows of this text (default: stories the model samples from BOS)
  --stories N             stories sampled for the pool (default 16)
  --seed N                seed of the story sampling and document order (default 1)
  --prefill               instead: block-sparse vs dense PREFILL (a planted needle near the start, its prefix at the
                          end; dense decode after each prefill, teacher-forced): greedy match, KL and needle tokens of
                          the flat and the hierarchical block selection (--prefill-top-blocks sets their budget)
  --prefill-hierarchy G,M the hierarchical selection measured: blocks per group, groups beyond the top blocks
                          (default the engine's 8,8)
  --json                  print the JSON result instead of the table
  --out FILE              also write the JSON result to FILE`,
  recall: `usage: sift bench recall [--model NAME|DIR] [options]

Attention-mass recall of hierarchical page selection vs exhaustive selection on the model's real keys: a document is
prefilled densely, the queries of its last tokens are captured per layer, both selections are made over the real
page digests, and the share of each head's softmax mass on the kept pages is compared.
${MODEL_HELP}
  --tokens N              document length (default 4096)
  --queries N             queries measured: the document's last N tokens (default 8)
  --budgets LIST          token budgets (default 512,1024)
  --hierarchy F1,F2,M     the hierarchy measured: pages per level-1 block, level-1 blocks per level-2 block, margin
                          (default the engine's 4,16,16; a tighter one prunes at shorter contexts)
  --text FILE             the document is the start of this text (default: stories the model samples from BOS)
  --stories N             stories sampled for the pool (default 16)
  --seed N                seed of the story sampling and order (default 1)
  --json                  print the JSON result instead of the table
  --out FILE              also write the JSON result to FILE`,
  quant: `usage: sift bench quant [--model NAME|DIR] [options]

Weight formats of one model side by side: weights and weight bytes per decode step, decode tokens/s (one sequence,
short context), and agreement with the unquantized model (teacher-forced: share of equal greedy tokens, mean and max
KL per position) over its greedy continuation of BOS and stories it samples.
${MODEL_HELP}
  --formats LIST          f32 (the model as stored), bf16, int8, q4g<N> (q4, groups of N, every matrix; suffixes keep
                          matrices at int8: e8 embedding and lm_head, v8 v_proj, d8 down_proj; --quantize q4's
                          default is q4g64v8d8), or .gguf files of the same model
                          (default f32,bf16,int8,q4g32,q4g64,q4g128,q4g64v8d8); suffix i (q4g64i,
                          q4g128i, q4g64v8d8i): calibrated q4 with the importance matrix of --imatrix
  --imatrix FILE          importance matrix (\`sift imatrix\`) of the calibrated formats
                          suffix g (q4g96g, q4g96v8g): GPTQ with the statistics of --gram; o: GPTQ with act-order
  --gram FILE             GPTQ's statistics (\`sift imatrix --full\`) of the GPTQ formats
  --sequences N           teacher-forced sequences (default 4)
  --length N              positions per sequence (default 255, capped by the model's context)
  --steps N               decode steps per speed repeat (default 32)
${outHelp(3)}`,
  step: `usage: sift bench step [--preset NAME | --model NAME|DIR] [options]

The host cost of one steady-state decode step, as the engine runs it: dispatches, bind groups created, writeBuffer
calls and bytes, submits, bytes read back, pipelines compiled after warm-up, host encode / sampling / step time
(medians, and the CPU time of the encode and of the host sampler), and a predicted H100 step time (dispatches x
7.5 us + bytes moved / 3 TB/s).
  --preset NAME           a synthetic shape (default llama3-8b-narrow: Llama-3-8B's 32 layers, heads and vocab at
                          narrow widths; llama3-8b: the real widths, for a GPU); known: ${Object.keys(SYNTHETIC_PRESETS).join(', ')}
  --model NAME|DIR        instead, a real model (e.g. stories15M)
  --layers N              cut (or grow) a synthetic preset to N layers
  --contexts LIST         context lengths (default 1024,4096)
  --batch LIST            sequences decoding together (default 1)
  --sampling LIST         ${Object.keys(STEP_SAMPLINGS).join(', ')} (default greedy,top-p)
  --budget N|dense        sparse token budget of the decode steps (default the attention config's, 4096)
  --steps N               timed steps per configuration (default 16)
  --warmup N              untimed steps first (default 4)
  --fill-pages N          real KV pages the block tables tile (default 16)
  --sequential            run steps one after the other (default: chained as the engine core runs them)
  --json                  print the JSON result instead of the table
  --out FILE              also write the JSON result to FILE`,
  prefill: `usage: sift bench prefill [--model NAME|DIR | --synthetic PRESET] [options]

A long prompt's prefill through the model (the engine's chunks: --max-batch-tokens, auto by default; dense or
--prefill-mode block-sparse), end to end, and where its time goes: the dispatches of some of its chunks are replayed
one at a time and timed with GPU timestamps where the adapter has them (else one submit each), grouped into matmul,
attention (K/V writes + attention kernels), selection (digests + block / page selection) and other (norms, RoPE,
SwiGLU, residual adds, embedding); host = end to end minus their sum.
${MODEL_HELP}
  --prompt-len LIST       prompt lengths (default 4096; the context and KV cache are sized to fit)
  --sample K              chunks replayed per length, evenly spread, the rest interpolated (default 3; 0 = all)
  --timing MODE           timestamps or submits (default timestamps where the adapter has them)
${outHelp(1)}`,
};
