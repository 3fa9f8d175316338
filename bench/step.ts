/**
 * `sift bench step`: the cost of one steady-state decode step as the engine runs it (ModelRunner.execute with B
 * decode entries, then sampling), counted on the host: dispatches, bind groups created, writeBuffer calls and
 * bytes, submits, bytes read back, pipelines compiled after warm-up (the runtime's own counters,
 * shaders/runtime.ts), host encode time, sampling time and the whole step's wall time; plus a predicted H100 step
 * time from a stated model: dispatches x 7.5 us + bytes moved / 3 TB/s (../shared/gpu/README.md: 7.5 us per
 * dispatch inside one pass, matvec at 2.96 TB/s).
 *
 * The KV cache is not filled: every sequence's block table tiles `fillPages` real pages up to its context (the
 * step reads as many KV bytes as at that context; the values are whatever the pages hold). Timing, not quality.
 * Each configuration decodes `warmup` steps first (the first one selects pages), then `steps` timed steps; with
 * steps a multiple of the reuse interval the page selection is amortized as in serving.
 */
import { SiftError } from '../config/errors.js';
import { Sampler, type SamplingParams, sampleLogits } from '../engine/sampler.js';
import { tokensAttended } from '../model/attention/budget.js';
import type { DecodeEntry } from '../model/executor.js';
import type { ModelRunner } from '../model/runner.js';
import { decodeStepWeightBytes } from '../model/weights.js';
import { countersDelta, type GpuCounters, UniformArena } from '../shaders/runtime.js';
import { packRowSpecs, SAMPLE_SPEC_WORDS, SampleKernel } from '../shaders/sample.js';
import { weightBytes } from '../shaders/tensor.js';
import { pseudoTokens } from './model-steps.js';
import { mdTable, stat } from './stats.js';

/** Sampling settings a configuration runs with. */
export const STEP_SAMPLINGS: Readonly<Record<string, Omit<SamplingParams, 'seed'>>> = Object.freeze({
  greedy: { temperature: 0, topK: 0, topP: 1 },
  'top-p': { temperature: 1, topK: 0, topP: 0.9 },
  'top-k': { temperature: 1, topK: 40, topP: 1 },
});

/** The cost model behind predictedH100Ms. */
export const H100_MODEL = Object.freeze({ usPerDispatch: 7.5, bytesPerS: 3e12 });

export interface StepBenchOptions {
  /** Label of the model (preset name or model name). */
  preset: string;
  contexts: number[];
  batches: number[];
  samplings: string[];
  /** Timed decode steps per configuration. */
  steps: number;
  /** Untimed decode steps before them (the first selects pages). */
  warmup: number;
  /** Real KV pages the block tables tile. */
  fillPages: number;
  /** Sparse token budget of the decode entries (Infinity = dense). */
  budget: number;
  /** Chain each step on the running one's device-sampled tokens, as the engine core does (default true). */
  overlap?: boolean;
  onProgress?: (msg: string) => void;
}

export interface StepBenchRow {
  preset: string;
  layers: number;
  hidden: number;
  vocab: number;
  context: number;
  batch: number;
  sampling: string;
  budget: number | null;
  /** Medians over the timed steps (per step). */
  dispatchesPerStep: number;
  /** The most dispatches of any timed step (a step that reselects pages). */
  dispatchesMaxPerStep: number;
  /** Mean over the timed steps: what a reuse interval costs per step. */
  dispatchesMeanPerStep: number;
  bindGroupsCreatedPerStep: number;
  writeBufferCallsPerStep: number;
  writeBufferBytesPerStep: number;
  submitsPerStep: number;
  readbacksPerStep: number;
  readbackBytesPerStep: number;
  /** Pipelines compiled during the timed steps (none is expected after warm-up). */
  pipelinesCreatedAfterWarmup: number;
  /** Host time of ForwardPass.encode (checks, uploads, encoding, submit), median ms. */
  hostEncodeMs: number;
  /** Host time spent sampling the step's rows (specs; host sampling of rows the device left), median ms. */
  sampleMs: number;
  /** The device sampler alone on `batch` rows of this vocabulary (one dispatch, synced), median ms. */
  deviceSamplerMs: number;
  /** The host rule (engine/sampler.ts sampleLogits) on one row of this vocabulary, median ms. */
  hostSamplerMs: number;
  /** The host rule's CPU time (the process's, nothing else running in it meanwhile), median ms. */
  hostSamplerCpuMs: number;
  /** Host encode time, the fastest step (the least disturbed by other work on a shared machine), ms. */
  hostEncodeMsMin: number;
  /**
   * CPU time of the process during the encode, median ms: what the host's work costs regardless of other processes
   * (sequential steps; chained, lavapipe's threads running the previous step in this process add theirs).
   */
  hostEncodeCpuMs: number;
  /** Wall time per step in a run of steps (chained: the interval between tokens), median ms; min and max. */
  stepMs: number;
  stepMsMin: number;
  stepMsMax: number;
  tokensPerS: number;
  /** Bytes a step moves through device memory in the cost model (weights, KV attended, digests, logits). */
  bytesMovedPerStep: number;
  /** dispatchesMeanPerStep x 7.5 us + bytesMovedPerStep / 3 TB/s. */
  predictedH100Ms: number;
}

export interface StepBenchResult {
  suite: 'step';
  preset: string;
  steps: number;
  warmup: number;
  fillPages: number;
  reuse: number;
  model: string;
  rows: StepBenchRow[];
  notes: string[];
}

let runId = 0;

/** Bytes a decode step of `batch` sequences at `context` moves in the cost model. */
export function stepBytes(engine: ModelRunner, context: number, batch: number, budget: number): number {
  const c = engine.config;
  const w = engine.weights;
  // every matrix once (in its format, quantized ones with their scales), one embedding row per sequence
  const weights = decodeStepWeightBytes(w) + (batch - 1) * Math.ceil(weightBytes(w.embed) / w.embed.rows);
  const ps = engine.kv.pageSize;
  const retrievalHeads = engine.kv.layers.reduce((n, l) => n + l.numRetrievalHeads, 0); // over all layers
  const kv = batch * retrievalHeads * tokensAttended(context + 1, budget, ps) * c.headDim * 2 * 2;
  // page scoring reads every logical page's (min, max) digest on a reselecting step (1 in `reuse`)
  const reuse = engine.attentionConfig.reuseInterval;
  const logical = Math.ceil((context + 1) / engine.attentionConfig.logicalPageSize);
  const sparse = context + 1 > budget;
  const digests = sparse ? (batch * retrievalHeads * logical * 2 * c.headDim * 2) / reuse : 0;
  const logits = batch * c.vocabSize * 4 * 2; // written by lm_head, read by the sampler
  return weights + kv + digests + logits;
}

export async function runStepBench(engine: ModelRunner, o: StepBenchOptions): Promise<StepBenchResult> {
  const ps = engine.kv.pageSize;
  const M = engine.forwardPass.maxPagesPerSeq;
  const c = engine.config;
  for (const s of o.samplings) {
    if (!STEP_SAMPLINGS[s]) {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `unknown --sampling "${s}" (known: ${Object.keys(STEP_SAMPLINGS).join(', ')})`,
      );
    }
  }
  if (o.fillPages > engine.kv.numPages) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      `--fill-pages ${o.fillPages} > the KV cache's ${engine.kv.numPages} pages (raise --kv-cache-mib)`,
    );
  }
  const rows: StepBenchRow[] = [];
  const gpu = engine.gpu;
  for (const context of o.contexts) {
    const need = context + o.warmup + o.steps + 1;
    if (need > engine.maxContext || Math.ceil(need / ps) > M) {
      throw new SiftError('INVALID_ARGUMENT', `context ${context} + steps exceeds --max-context ${engine.maxContext}`);
    }
    // every sequence's block table tiles the same real pages up to its context
    const pages = Uint32Array.from({ length: Math.ceil(need / ps) }, (_, j) => j % o.fillPages);
    for (const batch of o.batches) {
      if (batch > engine.limits.maxSeqs) {
        throw new SiftError('INVALID_ARGUMENT', `--batch ${batch} > --max-seqs ${engine.limits.maxSeqs}`);
      }
      for (const sampling of o.samplings) {
        const params = STEP_SAMPLINGS[sampling];
        const ids = Array.from({ length: batch }, () => `bench-step-${runId++}`);
        const samplers = ids.map((_, i) => new Sampler({ ...params, seed: 1000 + i }));
        const tokens = pseudoTokens(batch, c.vocabSize, context);
        const per: {
          counts: GpuCounters;
          encode: number;
          encodeCpu: number;
          sample: number;
          step: number;
          pipelines: number;
        }[] = [];
        // As the engine core runs them: with device sampling the next step is handed over (chained on the running
        // step's tokens) before the running one's tokens are read back; otherwise one after the other.
        const chain = o.overlap !== false && engine.limits.chainsSteps;
        const launch = (s: number) => {
          const specs = samplers.map((sm) => sm.nextStep());
          const entries = ids.map(
            (seqId, i): DecodeEntry => ({
              kind: 'decode',
              seqId,
              start: context + s,
              tokens: [tokens[i]],
              pages,
              sample: true,
              tokenBudget: o.budget,
              sampling: specs[i],
              ...(chain && s > 0 ? { chained: { row: i } } : {}),
            }),
          );
          const result = engine.execute({ entries });
          result.catch(() => {});
          const fp = engine.forwardPass;
          return { specs, result, encode: fp.lastEncodeMs, encodeCpu: fp.lastEncodeCpuMs };
        };
        let before = gpu.counters();
        let t0 = performance.now();
        let running = launch(0);
        for (let s = 0; s < o.warmup + o.steps; s++) {
          const timed = s >= o.warmup;
          o.onProgress?.(
            `step @${context} x${batch} ${sampling}: ${timed ? `step ${s - o.warmup + 1}/${o.steps}` : 'warm-up'}`,
          );
          const last = s + 1 === o.warmup + o.steps;
          // chained, each step's window holds the next step's hand-over (the last one's too: it runs untimed)
          const next = chain ? launch(s + 1) : null;
          const out = await running.result; // the step's tokens
          const t1 = performance.now();
          const V = c.vocabSize;
          running.specs.forEach((spec, i) => {
            if (out.tokens[i] >= 0) tokens[i] = out.tokens[i];
            else {
              const r = out.logitsRow[i];
              tokens[i] = sampleLogits(out.logits.subarray(r * V, (r + 1) * V), spec); // rows left to the host
            }
          });
          const t2 = performance.now();
          const counts = countersDelta(before, gpu.counters());
          if (timed) {
            per.push({
              counts,
              encode: (next ?? running).encode,
              encodeCpu: (next ?? running).encodeCpu,
              sample: t2 - t1,
              step: t2 - t0,
              pipelines: counts.pipelines,
            });
          }
          before = gpu.counters();
          t0 = t2;
          if (!last) running = next ?? launch(s + 1);
          else if (next) await next.result;
        }
        for (const id of ids) engine.release(id);
        const med = (f: (x: (typeof per)[number]) => number) => stat(per.map(f)).median;
        const dispatches = per.map((x) => x.counts.dispatches);
        const mean = dispatches.reduce((a, b) => a + b, 0) / dispatches.length;
        const step = stat(per.map((x) => x.step));
        const bytes = stepBytes(engine, context, batch, o.budget);
        const samplers_ = await samplerTimes(engine, batch, params);
        rows.push({
          preset: o.preset,
          layers: c.numLayers,
          hidden: c.hiddenSize,
          vocab: c.vocabSize,
          context,
          batch,
          sampling,
          budget: Number.isFinite(o.budget) ? o.budget : null,
          dispatchesPerStep: med((x) => x.counts.dispatches),
          dispatchesMaxPerStep: Math.max(...dispatches),
          dispatchesMeanPerStep: mean,
          bindGroupsCreatedPerStep: med((x) => x.counts.bindGroups),
          writeBufferCallsPerStep: med((x) => x.counts.writeBufferCalls),
          writeBufferBytesPerStep: med((x) => x.counts.writeBufferBytes),
          submitsPerStep: med((x) => x.counts.submits),
          readbacksPerStep: med((x) => x.counts.readbacks),
          readbackBytesPerStep: med((x) => x.counts.readbackBytes),
          pipelinesCreatedAfterWarmup: per.reduce((n, x) => n + x.pipelines, 0),
          hostEncodeMs: med((x) => x.encode),
          hostEncodeMsMin: Math.min(...per.map((x) => x.encode)),
          hostEncodeCpuMs: med((x) => x.encodeCpu),
          sampleMs: med((x) => x.sample),
          deviceSamplerMs: samplers_.device,
          hostSamplerMs: samplers_.host,
          hostSamplerCpuMs: samplers_.hostCpu,
          stepMs: step.median,
          stepMsMin: step.min,
          stepMsMax: step.max,
          tokensPerS: (batch * 1000) / step.median,
          bytesMovedPerStep: bytes,
          predictedH100Ms: (mean * H100_MODEL.usPerDispatch) / 1000 + (bytes / H100_MODEL.bytesPerS) * 1000,
        });
      }
    }
  }
  return {
    suite: 'step',
    preset: o.preset,
    steps: o.steps,
    warmup: o.warmup,
    fillPages: o.fillPages,
    reuse: engine.attentionConfig.reuseInterval,
    model: `${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads} q / ${c.numKvHeads} kv heads x ${c.headDim}, MLP ${c.intermediateSize}, vocab ${c.vocabSize}`,
    rows,
    notes: [
      `${o.steps} timed decode steps per configuration after ${o.warmup} warm-up steps; counts and times are medians per step; "max" is the step that reselects pages (every ${engine.attentionConfig.reuseInterval} steps)`,
      engine.limits.chainsSteps && o.overlap !== false
        ? "steps chained as the engine core runs them: each is handed over (encoded and submitted) while the one before runs, on its device-sampled tokens; step ms is the interval between one step's tokens and the next's"
        : 'steps one after the other: encode, submit, wait, read back, sample on the host',
      `KV cache not filled: each block table tiles ${o.fillPages} real pages up to its context (timing, not quality)`,
      `predicted H100 ms = mean dispatches per step x ${H100_MODEL.usPerDispatch} us + bytes moved / 3 TB/s (weights once per step, the KV tokens attended, page digests on reselecting steps amortized, logits written and read)`,
      "host encode: wall time of ForwardPass.submit (checks, the one upload, replay or encoding, submit), median and fastest; CPU ms: the process's CPU time over it, the host's own work when steps run one after the other (chained, lavapipe's threads running the previous step in this process add theirs)",
      '"sampler alone": the device sampler on `batch` random rows of the vocabulary (one dispatch, synced) and the host rule (engine/sampler.ts) on one row, at this configuration\'s sampling (wall ms, and the process\'s CPU ms over it)',
    ],
  };
}

/** The device sampler alone on `rows` random rows of the model's vocabulary, and the host rule on one (medians). */
async function samplerTimes(
  engine: ModelRunner,
  rows: number,
  params: Omit<SamplingParams, 'seed'>,
): Promise<{ device: number; host: number; hostCpu: number }> {
  const gpu = engine.gpu;
  const V = engine.config.vocabSize;
  let seed = 12345;
  const rnd = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 4294967296;
  };
  const logits = Float32Array.from({ length: rows * V }, () => (rnd() + rnd() + rnd() - 1.5) * 4);
  const specs = Array.from({ length: rows }, () => ({ ...params, u: rnd() }));
  const packed = new Uint32Array(rows * SAMPLE_SPEC_WORDS);
  packRowSpecs(specs, packed, new Uint32Array(2));
  const bufs = {
    logits: gpu.upload('bench.logits', logits),
    specs: gpu.upload('bench.specs', packed),
    bias: gpu.createBuffer('bench.bias', 16),
    tokens: gpu.createBuffer('bench.tokens', rows * 4),
    keys: gpu.createBuffer('bench.keys', rows * V * 4),
    weights: gpu.createBuffer('bench.weights', rows * V * 4),
  };
  const kernel = new SampleKernel(gpu);
  const arena = new UniformArena(gpu);
  const device: number[] = [];
  const host: number[] = [];
  const hostCpu: number[] = [];
  try {
    for (let i = 0; i < 6; i++) {
      const t0 = performance.now();
      arena.reset();
      gpu.run((pass) => kernel.encode(pass, arena, { ...bufs, rows, vocab: V }), arena);
      await gpu.sync();
      if (i > 0) device.push(performance.now() - t0);
      const t1 = performance.now();
      const cpu0 = process.cpuUsage();
      sampleLogits(logits.subarray(0, V), specs[0]);
      const cpu = process.cpuUsage(cpu0);
      if (i > 0) host.push(performance.now() - t1);
      if (i > 0) hostCpu.push((cpu.user + cpu.system) / 1000);
    }
  } finally {
    for (const b of Object.values(bufs)) b.destroy();
    arena.destroy();
  }
  return { device: stat(device).median, host: stat(host).median, hostCpu: stat(hostCpu).median };
}

const f = (x: number, d = 1) => x.toFixed(d);
const kb = (x: number) => (x >= 1024 ? `${f(x / 1024)} KB` : `${x} B`);

export function stepTable(r: StepBenchResult): string {
  return [
    `decode step, ${r.preset} (${r.model})`,
    '',
    mdTable(
      [
        'context',
        'batch',
        'sampling',
        'dispatches (max)',
        'bind groups',
        'writeBuffer calls / bytes',
        'submits',
        'read back',
        'host encode ms (min) / CPU ms',
        'sample ms (host)',
        'sampler alone: device / host ms',
        'step ms',
        'tok/s',
        'predicted H100 ms',
      ],
      r.rows.map((x) => [
        x.context,
        x.batch,
        x.sampling,
        `${x.dispatchesPerStep} (${x.dispatchesMaxPerStep})`,
        x.bindGroupsCreatedPerStep,
        `${x.writeBufferCallsPerStep} / ${kb(x.writeBufferBytesPerStep)}`,
        x.submitsPerStep,
        kb(x.readbackBytesPerStep),
        `${f(x.hostEncodeMs, 2)} (${f(x.hostEncodeMsMin, 2)}) / ${x.hostEncodeCpuMs === undefined ? '-' : f(x.hostEncodeCpuMs, 2)}`,
        f(x.sampleMs, 2),
        `${f(x.deviceSamplerMs, 2)} / ${f(x.hostSamplerMs, 2)} (CPU ${x.hostSamplerCpuMs === undefined ? '-' : f(x.hostSamplerCpuMs, 2)})`,
        `${f(x.stepMs)} (${f(x.stepMsMin)}..${f(x.stepMsMax)})`,
        f(x.tokensPerS),
        f(x.predictedH100Ms, 2),
      ]),
    ),
    '',
    ...r.notes.map((n) => `- ${n}`),
  ].join('\n');
}
