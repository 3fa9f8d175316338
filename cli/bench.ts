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
import { attentionTables, parseShape, runAttentionBench } from '../bench/attention.js';
import { emit, intList, metaLines, modelDirFor, startMeta } from '../bench/common.js';
import { decodeTable, runDecodeBench } from '../bench/decode.js';
import { forwardTable, runForwardBench } from '../bench/forward.js';
import { prefillTable, runPrefillBench } from '../bench/prefill.js';
import { type PrefillVariant, prefillAgreementTable, runPrefillAgreement } from '../bench/prefill-agreement.js';
import { quantTable, runQuantBench } from '../bench/quant.js';
import { recallTable, runRecall } from '../bench/recall.js';
import { runStepBench, stepTable } from '../bench/step.js';
import { loadModelConfig } from '../checkpoint/config.js';
import type { EngineConfig } from '../config/engine.js';
import { SiftError } from '../config/errors.js';
import { intFlag, numFlag } from '../config/flags.js';
import { ModelRunner } from '../model/runner.js';
import { FLAT_BLOCKS } from '../shaders/block_select.js';
import { Gpu } from '../shaders/runtime.js';
import { Tokenizer } from '../text/tokenizer.js';
import { HELP, OVERVIEW, SUITES, type Suite } from './bench-help.js';
import { attentionConfigFrom, engineConfigFrom, engineHelp, engineOptionDefs, parse, progressLine } from './common.js';

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
