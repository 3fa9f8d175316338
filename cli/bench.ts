/**
 * `sift bench [SUITE]`: the benchmark suites. Each prints a markdown table (with date, adapter, machine, load average
 * at start and end and the exact command line) and writes the JSON result with --out.
 *   forward    (default) forward-pass prefill / decode tokens/s, and batched decode (--batch)
 *   attention  kernel-level decode and prefill attention time, dense vs sparse, one layer, achieved bandwidth
 *   decode     model-level decode step time dense vs sparse at several contexts
 *   agreement  sparse vs dense greedy-token agreement and KL on a real model over long inputs
 *   quant      weight formats (F32, BF16, int8, q4, GGUF files): bytes per decode step, decode tokens/s, agreement
 *   prefill    where a long prompt's prefill time goes: matmul vs attention vs selection vs other, per prompt length
 *   step       host cost of a steady-state decode step (dispatches, bind groups, uploads, read-back, sampling)
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { agreementTable, runAgreement, sampleStories, storyDocument, textDocuments } from '../bench/agreement.js';
import { ATTENTION_SHAPES, attentionTables, parseShape, runAttentionBench } from '../bench/attention.js';
import { emit, intList, metaLines, modelDirFor, startMeta } from '../bench/common.js';
import { decodeTable, runDecodeBench } from '../bench/decode.js';
import { forwardTable, runForwardBench } from '../bench/forward.js';
import { prefillTable, runPrefillBench } from '../bench/prefill.js';
import { type PrefillVariant, prefillAgreementTable, runPrefillAgreement } from '../bench/prefill-agreement.js';
import { quantTable, runQuantBench } from '../bench/quant.js';
import { recallTable, runRecall } from '../bench/recall.js';
import { runStepBench, STEP_SAMPLINGS, stepTable } from '../bench/step.js';
import { loadModelConfig } from '../checkpoint/config.js';
import { DEFAULT_MODEL } from '../checkpoint/models.js';
import { SYNTHETIC_PRESETS } from '../checkpoint/synthetic.js';
import type { EngineConfig } from '../config/engine.js';
import { SiftError } from '../config/errors.js';
import { intFlag, numFlag } from '../config/flags.js';
import { ModelRunner } from '../model/runner.js';
import { FLAT_BLOCKS } from '../shaders/block_select.js';
import { Gpu } from '../shaders/runtime.js';
import { Tokenizer } from '../text/tokenizer.js';
import { attentionConfigFrom, engineConfigFrom, engineHelp, engineOptionDefs, parse, progressLine } from './common.js';

const SUITES = ['forward', 'attention', 'decode', 'agreement', 'recall', 'quant', 'step', 'prefill'] as const;
type Suite = (typeof SUITES)[number];

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

const OVERVIEW = `usage: sift bench [SUITE] [options]

Benchmarks with a warm-up, repeats, medians and spreads; each prints a markdown table (date, adapter, machine, load
average, the command line) and writes its JSON with --out. Suites:
${SUITES.map((s) => `  ${s.padEnd(10)} ${SUMMARY[s]}`).join('\n')}

Run \`sift bench SUITE --help\` for a suite's options. The model suites (forward, decode, agreement) drive the
forward pass directly, without the engine's streaming rings: they measure retrieval heads only and take no
--head-pattern (use \`sift generate\` or \`sift serve\` for streaming heads).`;

const HELP: Record<Suite, string> = {
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

const listDef = { type: 'string' } as const;

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h')) {
    process.stdout.write(`${OVERVIEW}\n`);
    return 0;
  }
  const first = argv[0];
  let suite: Suite = 'forward';
  let rest = argv;
  if (first !== undefined && !first.startsWith('-')) {
    if (!(SUITES as readonly string[]).includes(first)) {
      throw new SiftError('INVALID_ARGUMENT', `unknown bench suite "${first}" (suites: ${SUITES.join(', ')})`);
    }
    suite = first as Suite;
    rest = argv.slice(1);
  }
  const common = { json: { type: 'boolean' }, out: listDef, repeat: listDef } as const;
  const model = { model: listDef, synthetic: listDef } as const;
  const defs =
    suite === 'step'
      ? {
          json: common.json,
          out: listDef,
          model: listDef,
          preset: listDef,
          layers: listDef,
          contexts: listDef,
          batch: listDef,
          sampling: listDef,
          budget: listDef,
          steps: listDef,
          warmup: listDef,
          'fill-pages': listDef,
          sequential: { type: 'boolean' } as const,
          ...engineOptionDefs({ streaming: false }),
        }
      : suite === 'attention'
        ? {
            ...common,
            shape: listDef,
            contexts: listDef,
            'prefill-contexts': listDef,
            'prefill-sample': listDef,
            budget: listDef,
            reuse: listDef,
            'peak-gbps': listDef,
            adapter: listDef,
          }
        : suite === 'forward'
          ? {
              ...common,
              ...model,
              'prompt-len': listDef,
              'decode-tokens': listDef,
              context: listDef,
              batch: listDef,
              ...engineOptionDefs({ streaming: false }),
            }
          : suite === 'decode'
            ? {
                ...common,
                ...model,
                contexts: listDef,
                budget: listDef,
                steps: listDef,
                'fill-tokens': listDef,
                'fill-copy': { type: 'boolean' } as const,
                'sparse-only': { type: 'boolean' } as const,
                ...engineOptionDefs({ streaming: false }),
              }
            : suite === 'prefill'
              ? {
                  ...common,
                  ...model,
                  'prompt-len': listDef,
                  sample: listDef,
                  timing: listDef,
                  ...engineOptionDefs({ streaming: false }),
                }
              : suite === 'recall'
                ? {
                    ...common,
                    ...model,
                    budgets: listDef,
                    tokens: listDef,
                    queries: listDef,
                    hierarchy: listDef,
                    text: listDef,
                    stories: listDef,
                    seed: listDef,
                    ...engineOptionDefs({ streaming: false }),
                  }
                : suite === 'quant'
                  ? {
                      ...common,
                      ...model,
                      formats: listDef,
                      imatrix: listDef,
                      gram: listDef,
                      sequences: listDef,
                      length: listDef,
                      steps: listDef,
                      ...engineOptionDefs({ streaming: false }),
                    }
                  : {
                      ...common,
                      ...model,
                      budgets: listDef,
                      lengths: listDef,
                      docs: listDef,
                      steps: listDef,
                      text: listDef,
                      stories: listDef,
                      seed: listDef,
                      prefill: { type: 'boolean' } as const,
                      'prefill-hierarchy': listDef,
                      ...engineOptionDefs({ streaming: false }),
                    };
  const { values } = parse(rest, defs, `bench ${suite}`);
  if (values.help) {
    process.stdout.write(`${HELP[suite]}\n${suite === 'attention' ? '' : `\n${engineHelp({ streaming: false })}\n`}`);
    return 0;
  }
  const progress = progressLine();
  if (suite === 'attention') return attention(values, progress);
  if (suite === 'quant') return quant(values, progress);
  if (suite === 'step') {
    if (values.model === undefined) values.synthetic = values.preset ?? 'llama3-8b-narrow';
    else if (values.preset !== undefined) throw new SiftError('INVALID_ARGUMENT', 'give --preset or --model, not both');
  }
  return modelSuite(suite, values, progress);
}

type Progress = ReturnType<typeof progressLine>;

const listOrNone = (v: unknown, name: string, def: number[]) => (String(v) === 'none' ? [] : intList(v, name, def));

async function attention(values: Record<string, unknown>, progress: Progress): Promise<number> {
  const gpu = await Gpu.create({ adapter: engineConfigFrom({ adapter: values.adapter }).adapter });
  try {
    const meta = startMeta(gpu.caps);
    const isH100 = `${gpu.caps.adapterName} ${gpu.caps.description}`.toLowerCase().includes('h100');
    const shapes = String(values.shape ?? 'stories15M,llama3-8b')
      .split(',')
      .map((s) => parseShape(s.trim()));
    const result = await runAttentionBench(gpu, {
      shapes,
      contexts: listOrNone(values.contexts, 'contexts', [1024, 4096, 16384, 32768]),
      prefillContexts: listOrNone(values['prefill-contexts'], 'prefill-contexts', [4096, 16384, 32768]),
      prefillSample: intFlag(values['prefill-sample'], 'prefill-sample', 0, 0),
      budget: intFlag(values.budget, 'budget', 1024, 128),
      reuse: intFlag(values.reuse, 'reuse', 4, 1),
      repeat: intFlag(values.repeat, 'repeat', 5, 1),
      peakGbps: values['peak-gbps'] !== undefined ? numFlag(values['peak-gbps'], 'peak-gbps', 0) : isH100 ? 2970 : null,
      onProgress: progress.update,
    });
    progress.done();
    const m = meta.finish();
    emit({ ...m, ...result, shapes }, [...metaLines(m), '', attentionTables(result)].join('\n'), values);
    return 0;
  } finally {
    gpu.destroy();
  }
}

/** Model config numbers needed before loading: KV bytes per token (all layers) and the trained context. */
function kvBytesPerToken(dir: string): number {
  const c = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
  return c.num_hidden_layers * (c.num_key_value_heads ?? c.num_attention_heads) * headDim * 2 * 2;
}

/** Prompt lengths the forward suite measures when none are given, each capped at what the model holds. */
const FORWARD_PROMPT_LENS = [128, 512];

/**
 * The forward suite's lengths, checked against the tokens the model and the KV cache hold before the model loads:
 * the defaults are capped to fit (128,256 on a 256-token model); a length given that does not fit is an error that
 * says how to make room.
 */
export function forwardPlan(dir: string, cfg: EngineConfig, values: Record<string, unknown>) {
  const trained = loadModelConfig(dir).maxPositionEmbeddings;
  const context = cfg.maxContext ?? trained;
  const poolTokens = Math.floor((cfg.kvCacheMib * 2 ** 20) / (kvBytesPerToken(dir) * cfg.pageSize)) * cfg.pageSize;
  const fit = Math.min(context, poolTokens);
  const why =
    fit === context
      ? `the ${context}-token context (${cfg.maxContext === null ? "the model's max_position_embeddings; --max-context raises it" : '--max-context'})`
      : `the ${fit} tokens the KV cache holds (--kv-cache-mib raises it)`;
  const decodeTokens = intFlag(values['decode-tokens'], 'decode-tokens', 32, 1);
  const promptLens =
    values['prompt-len'] === undefined
      ? [...new Set(FORWARD_PROMPT_LENS.map((p) => Math.min(p, fit)))]
      : intList(values['prompt-len'], 'prompt-len', FORWARD_PROMPT_LENS);
  for (const p of promptLens) {
    if (p > fit) throw new SiftError('INVALID_ARGUMENT', `--prompt-len ${p} exceeds ${why}`, { param: 'prompt-len' });
  }
  const contexts = intList(values.context, 'context', [16]);
  for (const c of contexts) {
    if (c + decodeTokens > fit) {
      throw new SiftError('INVALID_ARGUMENT', `--context ${c} + --decode-tokens ${decodeTokens} exceeds ${why}`, {
        param: 'context',
      });
    }
  }
  return { promptLens, contexts, decodeTokens };
}

async function quant(values: Record<string, unknown>, progress: Progress): Promise<number> {
  const { dir, label } = await modelDirFor(values, progress.update);
  values['kv-cache-mib'] ??= '64';
  // the calibrated formats (suffix i) take --imatrix (or --quantize-imatrix); the reference is never quantized
  const engine = engineConfigFrom(values);
  const imatrix = (values.imatrix as string | undefined) || engine.quantizeImatrix || undefined;
  const gram = (values.gram as string | undefined) || engine.quantizeGptq || undefined;
  const cfg = { ...engine, quantizeImatrix: '', quantizeGptq: '' };
  const formats = String(values.formats ?? 'f32,bf16,int8,q4g32,q4g64,q4g128,q4g64v8d8')
    .split(',')
    .map((f) => f.trim())
    .filter(Boolean);
  if (formats[0] !== 'f32') formats.unshift('f32');
  const probe = await Gpu.create({ adapter: cfg.adapter || undefined });
  const meta = startMeta(probe.caps);
  probe.destroy();
  const r = await runQuantBench(dir, cfg, {
    formats,
    imatrix,
    gram,
    sequences: intFlag(values.sequences, 'sequences', 4, 1),
    length: intFlag(values.length, 'length', 255, 2),
    steps: intFlag(values.steps, 'steps', 32, 1),
    repeat: intFlag(values.repeat, 'repeat', 3, 1),
    onProgress: progress.update,
  });
  progress.done();
  const m = meta.finish();
  emit(
    { ...m, model: label, config: cfg, ...r },
    [...metaLines(m), `model ${label}`, '', quantTable(r)].join('\n'),
    values,
  );
  return 0;
}

async function modelSuite(
  suite: Exclude<Suite, 'attention' | 'quant'>,
  values: Record<string, unknown>,
  progress: Progress,
): Promise<number> {
  const { dir, label } = await modelDirFor(values, progress.update);
  const steps = intFlag(values.steps, 'steps', suite === 'agreement' ? 64 : 8, 1);
  // decode / agreement need a context well past a small model's trained one: size the context and KV cache to fit
  let longest = 0;
  if (suite === 'decode') longest = Math.max(...intList(values.contexts, 'contexts', [1024, 4096, 16384])) + steps;
  if (suite === 'agreement') longest = Math.max(...intList(values.lengths, 'lengths', [2048, 4096])) + steps;
  if (suite === 'prefill') longest = Math.max(...intList(values['prompt-len'], 'prompt-len', [4096]));
  if (suite === 'recall') longest = intFlag(values.tokens, 'tokens', 4096, 64);
  const stepOpts =
    suite === 'step'
      ? {
          contexts: intList(values.contexts, 'contexts', [1024, 4096]),
          batches: intList(values.batch, 'batch', [1]),
          samplings: String(values.sampling ?? 'greedy,top-p')
            .split(',')
            .map((x) => x.trim()),
          steps: intFlag(values.steps, 'steps', 16, 1),
          warmup: intFlag(values.warmup, 'warmup', 4, 1),
          fillPages: intFlag(values['fill-pages'], 'fill-pages', 16, 1),
        }
      : null;
  if (stepOpts) {
    const ctx = Math.ceil((Math.max(...stepOpts.contexts) + stepOpts.warmup + stepOpts.steps + 65) / 64) * 64;
    values['max-context'] ??= String(ctx);
    values['max-seqs'] ??= String(Math.max(...stepOpts.batches));
    const pageSize = values['page-size'] === undefined ? 64 : Number(values['page-size']);
    values['kv-cache-mib'] ??= String(
      Math.ceil((stepOpts.fillPages * pageSize * kvBytesPerToken(dir) * 1.1) / 2 ** 20) + 8,
    );
  }
  if (longest > 0) {
    const ctx = Math.ceil((longest + 64) / 64) * 64;
    values['max-context'] ??= String(ctx);
    if (suite === 'decode') values['max-seqs'] ??= '1'; // one sequence: per-sequence selection state stays small
    const stories = suite === 'agreement' || suite === 'recall' ? intFlag(values.stories, 'stories', 16, 1) * 320 : 0;
    values['kv-cache-mib'] ??= String(
      Math.max(64, Math.ceil(((ctx + stories) * kvBytesPerToken(dir) * 1.1) / 2 ** 20) + 8),
    );
  }
  const cfg = engineConfigFrom(values);
  const attentionCfg = attentionConfigFrom(values, cfg.pageSize, { streaming: false, command: `bench ${suite}` });
  const forward = suite === 'forward' ? forwardPlan(dir, cfg, values) : null;
  progress.update(`loading ${label} ...`);
  const engine = await ModelRunner.load(dir, cfg, { attention: attentionCfg });
  try {
    const meta = startMeta(engine.gpu.caps);
    const c = engine.config;
    const head = {
      model: label,
      shape: {
        hidden: c.hiddenSize,
        layers: c.numLayers,
        heads: c.numHeads,
        kvHeads: c.numKvHeads,
        headDim: c.headDim,
        intermediate: c.intermediateSize,
        vocab: c.vocabSize,
      },
      config: cfg,
    };
    const modelLine = `model ${label} (hidden ${c.hiddenSize}, ${c.numLayers} layers, ${c.numHeads} q / ${c.numKvHeads} kv heads x ${c.headDim}, vocab ${c.vocabSize})`;
    let result: object;
    let table: string;
    if (stepOpts) {
      const budget = String(values.budget ?? '');
      const r = await runStepBench(engine, {
        ...stepOpts,
        preset: label.replace(/^synthetic:/, ''),
        overlap: !values.sequential,
        budget:
          values.budget === undefined
            ? engine.attention.tokenBudget
            : budget === 'dense'
              ? Number.POSITIVE_INFINITY
              : intFlag(values.budget, 'budget', 4096, 64),
        onProgress: progress.update,
      });
      result = r;
      table = stepTable(r);
    } else if (suite === 'forward') {
      const r = await runForwardBench(engine, {
        promptLens: forward?.promptLens ?? [],
        contexts: forward?.contexts ?? [],
        decodeTokens: forward?.decodeTokens ?? 32,
        repeat: intFlag(values.repeat, 'repeat', 3, 1),
        batches: values.batch === undefined ? [] : intList(values.batch, 'batch', []),
        onProgress: progress.update,
      });
      result = r;
      table = forwardTable(r);
    } else if (suite === 'prefill') {
      const timing = values.timing === undefined ? undefined : String(values.timing);
      if (timing !== undefined && timing !== 'timestamps' && timing !== 'submits') {
        throw new SiftError('INVALID_ARGUMENT', `--timing must be timestamps or submits (got "${timing}")`, {
          param: 'timing',
        });
      }
      const r = await runPrefillBench(engine, {
        promptLens: intList(values['prompt-len'], 'prompt-len', [4096]),
        sample: intFlag(values.sample, 'sample', 3, 0),
        repeat: intFlag(values.repeat, 'repeat', 1, 1),
        timing,
        onProgress: progress.update,
      });
      result = r;
      table = prefillTable(r);
    } else if (suite === 'decode') {
      const r = await runDecodeBench(engine, {
        contexts: intList(values.contexts, 'contexts', [1024, 4096, 16384]),
        budget: intFlag(values.budget, 'budget', 1024, 128),
        steps,
        repeat: intFlag(values.repeat, 'repeat', 3, 1),
        fillTokens:
          values['fill-tokens'] === undefined ? undefined : intFlag(values['fill-tokens'], 'fill-tokens', 0, 64),
        fillCopy: Boolean(values['fill-copy']),
        sparseOnly: Boolean(values['sparse-only']),
        onProgress: progress.update,
      });
      result = r;
      table = decodeTable(r);
    } else if (suite === 'recall') {
      const tokens = intFlag(values.tokens, 'tokens', 4096, 64);
      const { docsFor, source } = await documents(values, engine, dir, 1, progress);
      const r = await runRecall(
        engine,
        docsFor(tokens)[0],
        {
          tokens,
          queries: intFlag(values.queries, 'queries', 8, 1),
          budgets: intList(values.budgets, 'budgets', [512, 1024], 128),
          hierarchy: values.hierarchy === undefined ? undefined : hierarchyFlag(values.hierarchy),
          onProgress: progress.update,
        },
        source,
      );
      result = r;
      table = recallTable(r);
    } else if (values.prefill) {
      if (attentionCfg.prefillMode !== 'dense') {
        throw new SiftError(
          'INVALID_ARGUMENT',
          '--prefill compares block-sparse prefill with dense: drop --prefill-mode',
        );
      }
      const docs = intFlag(values.docs, 'docs', 3, 1);
      const { docsFor, source } = await documents(values, engine, dir, docs, progress);
      const [groupBlocks, margin] = intList(values['prefill-hierarchy'], 'prefill-hierarchy', [8, 8], 0);
      if (!(groupBlocks >= 2) || !(margin >= 0)) {
        throw new SiftError(
          'INVALID_ARGUMENT',
          `--prefill-hierarchy must be G,M with G >= 2 (got ${values['prefill-hierarchy']})`,
        );
      }
      const variants: PrefillVariant[] = [];
      try {
        for (const [name, h] of [
          ['block-sparse, flat selection', FLAT_BLOCKS],
          [`block-sparse, hierarchical (groups ${groupBlocks}, margin ${margin})`, { groupBlocks, margin }],
        ] as const) {
          progress.update(`loading ${label} with ${name} prefill ...`);
          const bs = { ...attentionCfg, prefillMode: 'block-sparse' as const };
          variants.push({
            name,
            engine: await ModelRunner.load(dir, cfg, { gpu: engine.gpu, attention: bs, prefillHierarchy: h }),
          });
        }
        const r = await runPrefillAgreement(
          engine,
          variants,
          {
            lengths: intList(values.lengths, 'lengths', [2048, 4096]),
            docs,
            steps,
            onProgress: progress.update,
          },
          docsFor,
          source,
        );
        result = r;
        table = prefillAgreementTable(r);
      } finally {
        for (const v of variants) v.engine.destroy();
      }
    } else {
      const docs = intFlag(values.docs, 'docs', 3, 1);
      const { docsFor, source } = await documents(values, engine, dir, docs, progress);
      const r = await runAgreement(
        engine,
        {
          budgets: intList(values.budgets, 'budgets', [256, 512, 1024], 128),
          lengths: intList(values.lengths, 'lengths', [2048, 4096]),
          docs,
          steps,
          onProgress: progress.update,
        },
        docsFor,
        source,
      );
      result = r;
      table = agreementTable(r);
    }
    progress.done();
    const m = meta.finish();
    emit({ ...m, ...head, ...result }, [...metaLines(m), modelLine, '', table].join('\n'), values);
    return 0;
  } finally {
    engine.destroy();
  }
}

/** The documents of the agreement and recall suites: windows of --text, or stories the model samples from BOS. */
async function documents(
  values: Record<string, unknown>,
  engine: ModelRunner,
  dir: string,
  docs: number,
  progress: Progress,
): Promise<{ docsFor: (L: number) => number[][]; source: string }> {
  const seed = intFlag(values.seed, 'seed', 1, 0);
  if (values.text !== undefined) {
    const tok = Tokenizer.load(dir);
    const ids = await tok.encode(readFileSync(String(values.text), 'utf8'), { addBos: false });
    return { docsFor: (L) => textDocuments(ids, L, docs), source: `windows of ${values.text} (${ids.length} tokens)` };
  }
  const n = intFlag(values.stories, 'stories', 16, 1);
  const maxTok = Math.min(255, engine.config.maxPositionEmbeddings - 1);
  const stories = await sampleStories(engine, n, maxTok, seed * 1000, progress.update);
  const total = stories.reduce((a, s) => a + s.length, 0);
  return {
    docsFor: (L) => Array.from({ length: docs }, (_, d) => storyDocument(stories, L, seed * 7919 + d * 104729 + L)),
    source: `${stories.length} stories (${total} tokens) sampled from BOS (temperature 1, top-p 0.95, seeds ${seed * 1000}..), concatenated in a different order per document`,
  };
}

/** --hierarchy F1,F2,M: pages per level-1 block, level-1 blocks per level-2 block, candidates beyond K. */
function hierarchyFlag(v: unknown): { fan1: number; fan2: number; margin: number } {
  const [fan1, fan2, margin] = intList(v, 'hierarchy', [], 0);
  if (![fan1, fan2, margin].every((x) => Number.isInteger(x)) || fan1 < 2 || fan2 < 2 || margin < 0) {
    throw new SiftError('INVALID_ARGUMENT', `--hierarchy must be F1,F2,M with fans >= 2 and margin >= 0 (got ${v})`);
  }
  return { fan1, fan2, margin };
}
