/**
 * `sift bench prefill`: where the time of a long prompt's prefill goes. Per prompt length, the prefill through the
 * model runner (the engine's chunks, dense or block-sparse per --prefill-mode) timed end to end, then a breakdown:
 * the dispatches of a sample of its chunks are recorded as the forward pass encodes them and replayed one by one,
 * each in its own compute pass, timed by GPU timestamps when the adapter has them (one submit for the chunk), else
 * by one submit per dispatch timed on the host. Replaying a chunk's dispatches in order recomputes exactly what the
 * chunk computed (the same inputs, uniforms and caches). Kernels are grouped into
 *   matmul     the weight GEMMs (q/k/v/o, gate/up/down, lm_head);
 *   attention  K/V writes and the attention kernels (tiled prefill, streaming, decode);
 *   selection  block / page digests and block / page selection;
 *   other      norms, RoPE, SwiGLU, residual adds, embedding, gathers;
 * and `host` is the end-to-end time minus the dispatches' sum (submission, uniform writes, waits, read-back).
 */
import { SiftError } from '../config/errors.js';
import type { ModelRunner } from '../model/runner.js';
import type { Gpu } from '../shaders/runtime.js';
import { interpolatedSum, sampleChunks } from './attention-prefill.js';
import { disjointTable, pseudoTokens } from './model-steps.js';
import { mdTable, type Stat, stat } from './stats.js';

export const PHASES = ['matmul', 'attention', 'selection', 'other'] as const;
export type Phase = (typeof PHASES)[number];

/** The phase of a kernel, by its shader name (the pipeline label's first field). */
export function phaseOf(kernel: string): Phase {
  if (kernel.startsWith('matmul')) return 'matmul';
  if (/attention|sparse_decode|kv_write/.test(kernel)) return 'attention';
  if (/digest|select|page_score/.test(kernel)) return 'selection';
  return 'other';
}

/** One dispatch as the forward pass encoded it (Gpu.dispatch / Gpu.dispatchIndirect arguments). */
interface Recorded {
  kernel: string;
  pipeline: GPUComputePipeline;
  bindings: Parameters<Gpu['dispatch']>[2];
  grid: [number, number, number] | null;
  indirect: { args: GPUBuffer; offset: number } | null;
}

/**
 * Runs `fn` with every kernel dispatch the runtime encodes recorded (and encoded as usual): every kernel goes
 * through Gpu.dispatch or Gpu.dispatchIndirect, whatever pass or command encoder it lands in.
 */
async function recordDispatches<T>(gpu: Gpu, fn: () => Promise<T>): Promise<{ result: T; dispatches: Recorded[] }> {
  const dispatches: Recorded[] = [];
  const { dispatch, dispatchIndirect } = gpu;
  const kernel = (p: GPUComputePipeline) => p.label.split('|')[0];
  gpu.dispatch = (pass, pipeline, bindings, x, y = 1, z = 1) => {
    if (x > 0 && y > 0 && z > 0) {
      dispatches.push({ kernel: kernel(pipeline), pipeline, bindings: [...bindings], grid: [x, y, z], indirect: null });
    }
    dispatch.call(gpu, pass, pipeline, bindings, x, y, z);
  };
  gpu.dispatchIndirect = (pass, pipeline, bindings, args, offset) => {
    dispatches.push({
      kernel: kernel(pipeline),
      pipeline,
      bindings: [...bindings],
      grid: null,
      indirect: { args, offset },
    });
    dispatchIndirect.call(gpu, pass, pipeline, bindings, args, offset);
  };
  try {
    const result = await fn();
    return { result, dispatches };
  } finally {
    gpu.dispatch = dispatch;
    gpu.dispatchIndirect = dispatchIndirect;
  }
}

function encodeOne(gpu: Gpu, pass: GPUComputePassEncoder, d: Recorded): void {
  if (d.grid) gpu.dispatch(pass, d.pipeline, d.bindings, ...d.grid);
  else if (d.indirect) gpu.dispatchIndirect(pass, d.pipeline, d.bindings, d.indirect.args, d.indirect.offset);
}

/** GPU milliseconds of each dispatch, replayed in order: timestamps around each, or one timed submit each. */
async function replayTimes(gpu: Gpu, ds: readonly Recorded[], timestamps: boolean): Promise<number[]> {
  const dev = gpu.device;
  if (!timestamps) {
    const ms: number[] = [];
    for (const d of ds) {
      const enc = dev.createCommandEncoder();
      const pass = enc.beginComputePass();
      encodeOne(gpu, pass, d);
      pass.end();
      await gpu.sync();
      const t0 = performance.now();
      dev.queue.submit([enc.finish()]);
      await gpu.sync();
      ms.push(performance.now() - t0);
    }
    return ms;
  }
  const out: number[] = [];
  const MAX = 2048; // dispatches per query set (4096 timestamps)
  for (let s = 0; s < ds.length; s += MAX) {
    const part = ds.slice(s, s + MAX);
    const n = part.length * 2;
    const set = dev.createQuerySet({ type: 'timestamp', count: n });
    const resolve = dev.createBuffer({ size: n * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const enc = dev.createCommandEncoder();
    part.forEach((d, i) => {
      const pass = enc.beginComputePass({
        timestampWrites: { querySet: set, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
      });
      encodeOne(gpu, pass, d);
      pass.end();
    });
    enc.resolveQuerySet(set, 0, n, resolve, 0);
    dev.queue.submit([enc.finish()]);
    const ts = new BigUint64Array(await gpu.read(resolve, 0, n * 8));
    for (let i = 0; i < part.length; i++) out.push(Number(ts[2 * i + 1] - ts[2 * i]) / 1e6);
    set.destroy();
    resolve.destroy();
  }
  return out;
}

export interface PrefillBenchOptions {
  promptLens: number[];
  /** Chunks whose dispatches are replayed per length (0 = all); the others are interpolated. */
  sample: number;
  repeat: number;
  /** 'timestamps' (the default where the adapter has them) or 'submits'. */
  timing?: 'timestamps' | 'submits';
  onProgress?: (msg: string) => void;
}

export interface PrefillBenchRow {
  promptLen: number;
  chunk: number;
  chunks: number;
  timedChunks: number[];
  /** End-to-end prefill time (the runner's chunks, logits of the last token read back). */
  ms: Stat;
  tokensPerS: number;
  /** Per phase, GPU ms summed over the prompt's chunks (replayed chunks; the rest interpolated). */
  phaseMs: Record<Phase, number>;
  /** End-to-end median minus the phases' sum. */
  hostMs: number;
  /** The five kernels that took longest, summed over the prompt (ms). */
  topKernels: { kernel: string; ms: number }[];
}

export interface PrefillBenchResult {
  suite: 'prefill';
  timing: 'timestamps' | 'submits';
  prefillMode: string;
  repeat: number;
  rows: PrefillBenchRow[];
  notes: string[];
}

export async function runPrefillBench(engine: ModelRunner, o: PrefillBenchOptions): Promise<PrefillBenchResult> {
  const gpu = engine.gpu;
  const timing = o.timing ?? (gpu.caps.timestampQuery ? 'timestamps' : 'submits');
  if (timing === 'timestamps' && !gpu.caps.timestampQuery) {
    throw new SiftError('INVALID_ARGUMENT', `--timing timestamps: the adapter has no timestamp-query`);
  }
  const ps = engine.kv.pageSize;
  const maxLen = Math.min(engine.maxContext, engine.kv.numPages * ps);
  const chunk = engine.forwardPass.maxBatchTokens;
  const row = disjointTable(engine, 1, Math.ceil(maxLen / ps));
  const rows: PrefillBenchRow[] = [];
  for (const len of o.promptLens) {
    if (len > maxLen) {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `--prompt-len ${len} exceeds what the KV cache / context holds (${maxLen})`,
      );
    }
    const ids = pseudoTokens(len, engine.config.vocabSize, len);
    const seq = `bench-prefill-${len}`;
    const times: number[] = [];
    for (let r = 0; r <= o.repeat; r++) {
      o.onProgress?.(`prefill ${len}: run ${r}/${o.repeat}${r === 0 ? ' (warm-up)' : ''}`);
      const t0 = performance.now();
      await engine.prefill(seq, ids, row);
      if (r > 0) times.push(performance.now() - t0);
    }
    // the cache holds the whole prompt now: each sampled chunk runs again alone (the same step), recorded, replayed
    const nChunks = Math.ceil(len / chunk);
    const chosen = sampleChunks(nChunks, o.sample);
    const perChunk: Record<Phase, number[]> = { matmul: [], attention: [], selection: [], other: [] };
    const kernels = new Map<string, number[]>();
    for (const [i, c] of chosen.entries()) {
      o.onProgress?.(`prefill ${len}: breakdown, chunk ${c + 1}/${nChunks} (${i + 1}/${chosen.length})`);
      const start = c * chunk;
      const { dispatches } = await recordDispatches(gpu, () =>
        engine.prefill(seq, ids.slice(start, start + chunk), row, start),
      );
      const ms = await replayTimes(gpu, dispatches, timing === 'timestamps');
      const sums: Record<Phase, number> = { matmul: 0, attention: 0, selection: 0, other: 0 };
      dispatches.forEach((d, j) => {
        sums[phaseOf(d.kernel)] += ms[j];
        const k = kernels.get(d.kernel) ?? new Array<number>(chosen.length).fill(0);
        k[i] += ms[j];
        kernels.set(d.kernel, k);
      });
      for (const p of PHASES) perChunk[p].push(sums[p]);
    }
    engine.release(seq);
    const errs = gpu.takeErrors();
    if (errs.length) throw new SiftError('INTERNAL', `WebGPU errors during the benchmark: ${errs.join('; ')}`);
    const phaseMs = Object.fromEntries(PHASES.map((p) => [p, interpolatedSum(nChunks, chosen, perChunk[p])])) as Record<
      Phase,
      number
    >;
    const total = stat(times);
    const gpuSum = PHASES.reduce((a, p) => a + phaseMs[p], 0);
    const topKernels = [...kernels]
      .map(([kernel, v]) => ({ kernel, ms: interpolatedSum(nChunks, chosen, v) }))
      .sort((a, b) => b.ms - a.ms)
      .slice(0, 5);
    rows.push({
      promptLen: len,
      chunk,
      chunks: nChunks,
      timedChunks: chosen,
      ms: total,
      tokensPerS: (len / total.median) * 1000,
      phaseMs,
      hostMs: total.median - gpuSum,
      topKernels,
    });
  }
  const notes = [
    `phases: GPU time of each dispatch replayed alone (${timing === 'timestamps' ? 'timestamp queries around each, one submit per chunk' : 'one submit per dispatch, host-timed: includes a submit each'}); host = end-to-end median - phases (below 0 when the replay, one pass per dispatch, ran slower than the step: noise or load)`,
  ];
  if (rows.some((r) => r.timedChunks.length < r.chunks)) {
    notes.push('only some chunks were replayed (timedChunks); the phases of the others are interpolated');
  }
  return {
    suite: 'prefill',
    timing,
    prefillMode: engine.attentionConfig.prefillMode,
    repeat: o.repeat,
    rows,
    notes,
  };
}

const f = (x: number, d = 1) => x.toFixed(d);

export function prefillTable(r: PrefillBenchResult): string {
  // phases as shares of the dispatches' sum (the replay's own total), host in seconds: the replay and the step ran
  // at different times, so on a shared machine their totals differ by more than the host's work
  const gpuSum = (row: PrefillBenchRow) => PHASES.reduce((a, p) => a + row.phaseMs[p], 0);
  const share = (row: PrefillBenchRow, ms: number) => `${f(ms / 1000, 2)} s (${f((100 * ms) / gpuSum(row))}%)`;
  return [
    `prefill (${r.prefillMode}), end to end and by phase (GPU s and share of the phases' sum; phases from ${r.timing})`,
    '',
    mdTable(
      ['prompt', 'chunk', 'chunks replayed', 'prefill s (min..max)', 'tokens/s', ...PHASES, 'host', 'top kernels (s)'],
      r.rows.map((row) => [
        row.promptLen,
        row.chunk,
        `${row.timedChunks.length}/${row.chunks}`,
        `${f(row.ms.median / 1000, 2)} (${f(row.ms.min / 1000, 2)}..${f(row.ms.max / 1000, 2)})`,
        f(row.tokensPerS),
        ...PHASES.map((p) => share(row, row.phaseMs[p])),
        `${f(row.hostMs / 1000, 2)} s`,
        row.topKernels.map((k) => `${k.kernel} ${f(k.ms / 1000, 2)}`).join(', '),
      ]),
    ),
    '',
    ...r.notes.map((n) => `- ${n}`),
  ].join('\n');
}
