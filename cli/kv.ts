/**
 * `sift kv`: KV-cache memory of a model: bytes per token in the paged pool, with and without streaming heads, and
 * per sequence at a few context lengths (paged pool + the streaming pool's constant rings). Pure arithmetic over
 * the model's shape (kvcache/bytes.ts), the same accounting the engine sizes its pools with; and how one layer's
 * K (or V) pool splits into slabs of whole pages within a binding limit (model/kv-storage.ts), which bounds the
 * context by the slabs a kernel can bind.
 */

import { loadModelConfig } from '../checkpoint/config.js';
import { DEFAULT_MODEL } from '../checkpoint/models.js';
import { resolveModel } from '../checkpoint/pull.js';
import { GGUF_FILE_BITS, modelWeightBytes, WEIGHT_FORMATS, type WeightShape } from '../checkpoint/weight-bytes.js';
import { SiftError } from '../config/errors.js';
import { intFlag, numFlag } from '../config/flags.js';
import { bytesPerPage, type KvShape, kvBytesPerSequence, kvBytesPerToken } from '../kvcache/bytes.js';
import { maxSlabsPerPool } from '../model/kv-storage.js';
import { cachePageBytes } from '../shaders/kv_write.js';
import { planSlabs } from '../shaders/lib/slabs.js';
import { digestBytes } from '../shaders/page_digest.js';
import { parse } from './common.js';

/** Model shapes without a checkpoint. */
const SHAPES: Record<string, WeightShape> = {
  'llama3-8b': {
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 8,
    headDim: 128,
    hiddenSize: 4096,
    intermediateSize: 14336,
    vocabSize: 128256,
    tieWordEmbeddings: false,
    attentionBias: false,
  },
};

const HELP = `usage: sift kv [--model NAME|DIR | --shape ${Object.keys(SHAPES).join('|')}] [options]

KV-cache bytes per token (f16 K and V) and per sequence, dense vs with streaming heads; then the model's weight
memory in each format (F32, BF16, --quantize int8 / q4, GGUF Q8_0 / Q4_K / Q6_K as sift stores them) with the KV
cache of one sequence of the largest context.
  --model NAME|DIR        a known model name (default ${DEFAULT_MODEL}, fetched on first use) or an HF directory
  --shape NAME            instead, a model shape without a checkpoint: ${Object.keys(SHAPES).join(', ')}
  --streaming-fraction F  share of (layer, KV head) pairs that stream (default 0.5 GQA / 0.25 MHA as LServe)
  --sink N --local N      streaming window (default 128 + 256)
  --page-size N           tokens per page (default 64); --logical-page-size N digests (default 16)
  --contexts LIST         context lengths for the per-sequence table (default 4096,32768,131072)
  --binding-limit-mib N   maxStorageBufferBindingSize the pools split by (default 128, lavapipe; an H100: 2048)
  --storage-buffers N     maxStorageBuffersPerShaderStage (default 16, lavapipe and the H100)
  --json                  print JSON
`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parse(
    argv,
    {
      model: { type: 'string' },
      shape: { type: 'string' },
      'streaming-fraction': { type: 'string' },
      sink: { type: 'string' },
      local: { type: 'string' },
      'page-size': { type: 'string' },
      'logical-page-size': { type: 'string' },
      contexts: { type: 'string' },
      'binding-limit-mib': { type: 'string' },
      'storage-buffers': { type: 'string' },
      json: { type: 'boolean' },
    },
    'kv',
  );
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let name: string;
  let shape: { numLayers: number; numKvHeads: number; headDim: number; gqa: boolean };
  let model: WeightShape;
  if (values.shape !== undefined) {
    const s = SHAPES[String(values.shape)];
    if (!s)
      throw new SiftError(
        'INVALID_ARGUMENT',
        `unknown --shape ${values.shape} (known: ${Object.keys(SHAPES).join(', ')})`,
      );
    name = String(values.shape);
    shape = { numLayers: s.numLayers, numKvHeads: s.numKvHeads, headDim: s.headDim, gqa: s.numHeads > s.numKvHeads };
    model = s;
  } else {
    const dir = await resolveModel((values.model as string | undefined) ?? DEFAULT_MODEL, { autoPull: true });
    const c = loadModelConfig(dir);
    name = dir;
    shape = { numLayers: c.numLayers, numKvHeads: c.numKvHeads, headDim: c.headDim, gqa: c.numHeads > c.numKvHeads };
    model = c;
  }
  const fraction = numFlag(values['streaming-fraction'], 'streaming-fraction', shape.gqa ? 0.5 : 0.25, {
    min: 0,
    max: 1,
  });
  const sink = intFlag(values.sink, 'sink', 128);
  const local = intFlag(values.local, 'local', 256, 1);
  const pageSize = intFlag(values['page-size'], 'page-size', 64, 1);
  const logicalPageSize = intFlag(values['logical-page-size'], 'logical-page-size', 16, 1);
  const contexts = String(values.contexts ?? '4096,32768,131072')
    .split(',')
    .map((x) => intFlag(x.trim(), 'contexts', 0, 1));
  const limitMib = numFlag(values['binding-limit-mib'], 'binding-limit-mib', 128);
  if (!(limitMib > 0)) throw new SiftError('INVALID_ARGUMENT', `--binding-limit-mib must be > 0 (got ${limitMib})`);
  const storageBuffers = intFlag(values['storage-buffers'], 'storage-buffers', 16, 8);
  const limit = Math.floor(limitMib * 2 ** 20);
  const maxSlabs = maxSlabsPerPool(storageBuffers);
  const kPage = cachePageBytes(pageSize, shape.numKvHeads, shape.headDim);
  const dPage = digestBytes(1, pageSize, logicalPageSize, shape.numKvHeads, shape.headDim);
  const pagesPerSlab = Math.floor(limit / kPage);
  // one sequence of n tokens alone in the cache, every head a retrieval head: slabs of its layer pools
  const split = (n: number) => {
    const pages = Math.ceil(n / pageSize);
    const k = planSlabs(kPage, pages, limit);
    return {
      kvSlabsPerLayer: k.numSlabs,
      digestSlabsPerLayer: planSlabs(dPage, pages, limit).numSlabs,
      fits: k.numSlabs <= maxSlabs,
    };
  };
  const dense: KvShape = { ...shape, bytesPerElement: 2 };
  const mixed: KvShape = { ...dense, streamingFraction: fraction };
  const streaming = { sinkTokens: sink, localTokens: local };
  const result = {
    model: name,
    shape: { numLayers: shape.numLayers, numKvHeads: shape.numKvHeads, headDim: shape.headDim },
    streamingFraction: fraction,
    sink,
    local,
    pageSize,
    bytesPerToken: { dense: kvBytesPerToken(dense), withStreamingHeads: kvBytesPerToken(mixed) },
    bytesPerPageWithDigests: {
      dense: bytesPerPage(dense, pageSize, logicalPageSize),
      withStreamingHeads: bytesPerPage(mixed, pageSize, logicalPageSize),
    },
    perSequence: contexts.map((n) => ({
      tokens: n,
      dense: kvBytesPerSequence(dense, n, { pageSize, logicalPageSize }),
      withStreamingHeads: kvBytesPerSequence(mixed, n, { pageSize, logicalPageSize, streaming }),
      slabs: split(n),
    })),
    weights: WEIGHT_FORMATS.map((format) => ({ format, ...modelWeightBytes(model, format) })),
    slabs: {
      bindingLimit: limit,
      storageBuffersPerStage: storageBuffers,
      pageBytesPerLayer: kPage,
      pagesPerSlab,
      maxSlabsPerPool: maxSlabs,
      maxTokens: maxSlabs * pagesPerSlab * pageSize,
    },
  };
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  }
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  const lines = [
    `${name}: ${shape.numLayers} layers x ${shape.numKvHeads} KV heads x ${shape.headDim} dims, f16 K and V`,
    '',
    '| | dense | streaming heads |',
    '|---|---|---|',
    `| bytes per token (paged pool) | ${result.bytesPerToken.dense} | ${result.bytesPerToken.withStreamingHeads} (${Math.round(fraction * 100)}% of heads stream, sink ${sink} + local ${local}) |`,
    `| bytes per ${pageSize}-token page incl. digests | ${result.bytesPerPageWithDigests.dense} | ${result.bytesPerPageWithDigests.withStreamingHeads} |`,
    ...result.perSequence.map(
      (p) =>
        `| one sequence of ${p.tokens} tokens (MiB) | ${mib(p.dense)} | ${mib(p.withStreamingHeads)} (${(p.dense / p.withStreamingHeads).toFixed(2)}x less) |`,
    ),
    '',
    `Slabs (binding limit ${limitMib} MiB, ${storageBuffers} storage buffers per stage): one layer's K (or V) pool ` +
      `splits into slabs of ${pagesPerSlab} pages (${pagesPerSlab * pageSize} tokens, ${mib(pagesPerSlab * kPage)} MiB); ` +
      `the kernels bind at most ${maxSlabs} per pool: ${result.slabs.maxTokens} tokens in the cache.`,
    '',
    '| context | K/V slabs per layer pool | digest slabs per layer | fits |',
    '|---|---|---|---|',
    ...result.perSequence.map(
      (p) =>
        `| ${p.tokens} | ${p.slabs.kvSlabsPerLayer} | ${p.slabs.digestSlabsPerLayer} | ${p.slabs.fits ? 'yes' : 'no'} |`,
    ),
  ];
  const big = modelWeightBytes(model, 'bf16').total >= 2 ** 30;
  const unit = big ? 'GiB' : 'MiB';
  const gib = (b: number) => (b / 2 ** (big ? 30 : 20)).toFixed(2);
  const longest = result.perSequence[result.perSequence.length - 1];
  const bf16 = modelWeightBytes(model, 'bf16').perDecodeStep;
  lines.push(
    '',
    `Weights (${unit}; norms and biases f32; decode step = all layers + lm_head + one embedding row):`,
    '',
    `| format | weights | read per decode step | vs BF16 | + KV of one ${longest.tokens}-token sequence (dense) |`,
    '|---|---|---|---|---|',
    ...result.weights.map((w) => {
      const file = GGUF_FILE_BITS[w.format];
      const label = file ? `GGUF ${w.format} (${file} bits/weight in the file)` : w.format;
      return `| ${label} | ${gib(w.total)} | ${gib(w.perDecodeStep)} | ${(bf16 / w.perDecodeStep).toFixed(2)}x less | ${gib(w.total + longest.dense)} |`;
    }),
  );
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
