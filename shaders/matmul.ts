/**
 * Dense linear layer as HF's nn.Linear: out (T, rows) = x (T, cols) @ W^T (+ bias), W (rows, cols) a GpuWeight in
 * f32 or packed f16/bf16 pairs, split into row chunks (one dispatch per chunk, each writing its rows of out).
 * T = 1 is the decode matvec; T > 1 tiles tokens so every weight element is read once per tile of tokens.
 *
 * Two strategies, picked per adapter (override with `variant`):
 *  - 'thread' (shaders/matmul.wgsl): one invocation per (row, token tile). Fastest on CPU adapters (lavapipe).
 *  - 'workgroup' (shaders/matmul_wg.wgsl): one workgroup per (row, token tile) with a subgroup / workgroup
 *    reduction. Needed on real GPUs to read weights at the memory-copy rate.
 * Prefill (T >= `tiledMinTokens`, default 64): the tiled GEMM (shaders/matmul_tiled.wgsl), every weight element
 * read once per tile of 64 tokens, for every weight dtype (its blocks come through matmul_common's wBlock, q8 / q4
 * dequantized in the kernel): on GPUs 64 x 64 tiles staged in workgroup memory with 4 x 4 register blocks per
 * thread; on CPU adapters the SIMD lanes are 64 tokens sharing each broadcast weight block across 8 rows.
 */
import { SiftError } from '../config/errors.js';
import { requireBytes, requireInts } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';
import type { GpuWeight } from './tensor.js';

/** struct Params of matmul_common.wgsl (both variants). */
const PARAMS = defineParams('matmul', {
  rows: 'u32',
  cols: 'u32',
  strideV: 'u32',
  T: 'u32',
  rowOffset: 'u32',
  outStride: 'u32',
  hasBias: 'u32',
  groupBlocks: 'u32',
  groupsPerRow: 'u32',
});

export type MatmulVariant = 'thread' | 'workgroup';

export interface MatmulOptions {
  /** Strategy; default 'thread' on CPU adapters (gpu.caps.isCpu), else 'workgroup'. */
  variant?: MatmulVariant;
  /** 'workgroup' variant: reduce with subgroupAdd; default where the device has subgroups. */
  subgroups?: boolean;
  /** Tokens per tile when T > 1; default 4 ('thread') or 8 ('workgroup'). */
  tokenTile?: number;
  /** Unpack q8/q4 weights with WGSL's packed 4x8 built-ins; default where the device has them. */
  packed4x8?: boolean;
  /** Smallest T that takes the tiled GEMM (default 64; Infinity: never). */
  tiledMinTokens?: number;
}

export interface MatmulArgs {
  x: Binding; // (T, cols) f32; must not alias out
  w: GpuWeight; // (rows, cols)
  bias?: Binding; // (rows) f32
  out: Binding; // (T, rows) f32
  T: number;
}

/** Throws INTERNAL unless the chunks of `w` cover its rows in order and rowStride is cols rounded up to 8. */
export function assertWeightLayout(kernel: string, w: GpuWeight): void {
  if (w.rows < 1 || w.cols < 1 || w.rowStride !== Math.ceil(w.cols / 8) * 8) {
    throw new SiftError(
      'INTERNAL',
      `${kernel}: weight ${w.name} has a bad shape (${w.rows}, ${w.cols}) stride ${w.rowStride}`,
    );
  }
  let next = 0;
  for (const c of w.chunks) {
    if (c.firstRow !== next || c.rows < 1) {
      throw new SiftError('INTERNAL', `${kernel}: weight ${w.name} chunks do not tile its rows (at row ${next})`);
    }
    next += c.rows;
  }
  if (next !== w.rows) {
    throw new SiftError('INTERNAL', `${kernel}: weight ${w.name} chunks cover ${next} of ${w.rows} rows`);
  }
  const quantized = w.dtype === 'q8' || w.dtype === 'q4';
  if (quantized !== (w.quant !== undefined) || (quantized && w.chunks.some((c) => !c.scales))) {
    throw new SiftError('INTERNAL', `${kernel}: weight ${w.name} (${w.dtype}) has inconsistent scale groups`);
  }
}

function nextPow2(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
}

export class MatmulKernel {
  readonly variant: MatmulVariant;
  /** Whether the 'workgroup' variant reduces with subgroupAdd. */
  readonly subgroups: boolean;
  readonly tokenTile: number;
  /** Whether q8/q4 weights are unpacked with unpack4xI8 / unpack4xU8 (else shifts). */
  readonly packed4x8: boolean;
  /** Invocations per workgroup of the 'thread' variant (rows per workgroup). */
  private static readonly THREAD_WG = 64;
  /** Tokens per tile of the tiled GEMM, rows per workgroup of its GPU layout, rows per invocation on CPUs. */
  private static readonly TILE_TOKENS = 64;
  private static readonly TILE_ROWS = 64;
  private static readonly CPU_ROWS = 8;
  readonly tiledMinTokens: number;
  /** Bound in place of an absent bias (one pipeline serves both; a uniform says which). */
  private readonly noBias: GPUBuffer;

  constructor(
    private readonly gpu: Gpu,
    opts: MatmulOptions = {},
  ) {
    this.noBias = gpu.createBuffer('matmul-no-bias', 16);
    this.variant = opts.variant ?? (gpu.caps.isCpu ? 'thread' : 'workgroup');
    this.subgroups = this.variant === 'workgroup' && (opts.subgroups ?? gpu.caps.subgroups);
    if (this.subgroups && !gpu.caps.subgroups) {
      throw new SiftError('INTERNAL', 'matmul: subgroups requested but the device has none');
    }
    this.tokenTile = opts.tokenTile ?? (this.variant === 'thread' ? 4 : 8);
    this.packed4x8 = opts.packed4x8 ?? gpu.caps.packed4x8;
    if (this.packed4x8 && !gpu.caps.packed4x8) {
      throw new SiftError('INTERNAL', 'matmul: packed 4x8 built-ins requested but the device has none');
    }
    if (!Number.isInteger(this.tokenTile) || this.tokenTile < 1 || this.tokenTile > 32) {
      throw new SiftError('INTERNAL', `matmul: token tile ${this.tokenTile} outside [1, 32]`);
    }
    this.tiledMinTokens = opts.tiledMinTokens ?? MatmulKernel.TILE_TOKENS;
  }

  /** The weight dtype and x layout defines of matmul_common.wgsl. */
  private dtypeDefines(w: GpuWeight) {
    return {
      F32: w.dtype === 'f32',
      BF16: w.dtype === 'bf16',
      Q8: w.dtype === 'q8',
      Q4: w.dtype === 'q4',
      SCALE_F16: w.quant?.scaleF16 ?? false,
      PACKED4X8: this.packed4x8,
      XV4: w.cols % 4 === 0,
    };
  }

  /** The tiled GEMM's pipeline and rows per workgroup (x of the grid). */
  private tiledPipeline(w: GpuWeight): { pipeline: GPUComputePipeline; rowsPerWg: number } {
    const shared = this.variant === 'workgroup';
    const defines = { ...this.dtypeDefines(w), SHARED: shared, RB: MatmulKernel.CPU_ROWS };
    return {
      pipeline: this.gpu.pipeline('matmul_tiled', defines, {}, PARAMS),
      rowsPerWg: shared ? MatmulKernel.TILE_ROWS : MatmulKernel.CPU_ROWS,
    };
  }

  private pipelineFor(w: GpuWeight, tt: number): { pipeline: GPUComputePipeline; wg: number } {
    const defines = { ...this.dtypeDefines(w), TT: tt };
    if (this.variant === 'thread') {
      const wg = MatmulKernel.THREAD_WG;
      return { pipeline: this.gpu.pipeline('matmul', defines, { WG: wg }, PARAMS), wg };
    }
    // Enough invocations to cover a row's 8-element blocks once, within [32, 256].
    const wg = Math.min(256, this.gpu.caps.maxComputeInvocationsPerWorkgroup, Math.max(32, nextPow2(w.rowStride / 8)));
    return {
      pipeline: this.gpu.pipeline('matmul_wg', { ...defines, WG: wg, SUBGROUPS: this.subgroups }, {}, PARAMS),
      wg,
    };
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: MatmulArgs): void {
    const { w, T } = a;
    assertWeightLayout('matmul', w);
    requireInts('matmul', { T });
    if (T === 0) return;
    requireBytes('matmul', 'x', a.x, T * w.cols * 4, `(${T}, ${w.cols}) f32`);
    requireBytes('matmul', 'out', a.out, T * w.rows * 4, `(${T}, ${w.rows}) f32`);
    if (a.bias) requireBytes('matmul', 'bias', a.bias, w.rows * 4, `(${w.rows}) f32`);
    const strideV = w.dtype === 'f32' ? w.rowStride / 4 : w.rowStride / 8; // vec4 words, or q8/q4 blocks of 8
    const maxDim = this.gpu.caps.maxComputeWorkgroupsPerDimension;
    const bindingsOf = (c: GpuWeight['chunks'][number]): Binding[] => {
      const u = arena.params(PARAMS, {
        rows: c.rows,
        cols: w.cols,
        strideV,
        T,
        rowOffset: c.firstRow,
        outStride: w.rows,
        hasBias: a.bias ? 1 : 0,
        groupBlocks: w.quant?.groupBlocks ?? 1,
        groupsPerRow: w.quant?.groupsPerRow ?? 1,
      });
      const bindings: Binding[] = [a.x, c.buffer, a.out, u, a.bias ?? this.noBias];
      if (w.quant) {
        if (!c.scales) throw new SiftError('INTERNAL', `matmul: quantized weight ${w.name} has a chunk without scales`);
        bindings.push(c.scales);
      }
      return bindings;
    };
    if (T >= this.tiledMinTokens) {
      const { pipeline, rowsPerWg } = this.tiledPipeline(w);
      const tokenTiles = Math.ceil(T / MatmulKernel.TILE_TOKENS);
      for (const c of w.chunks) {
        const nx = Math.ceil(c.rows / rowsPerWg);
        if (nx > maxDim || tokenTiles > maxDim) {
          throw new SiftError('INTERNAL', `matmul: ${nx} x ${tokenTiles} workgroups exceed the grid limit ${maxDim}`);
        }
        this.gpu.dispatch(pass, pipeline, bindingsOf(c), nx, tokenTiles);
      }
      return;
    }
    const tt = T === 1 ? 1 : Math.min(this.tokenTile, T);
    const tiles = Math.ceil(T / tt);
    const { pipeline } = this.pipelineFor(w, tt);
    for (const c of w.chunks) {
      const bindings = bindingsOf(c);
      if (this.variant === 'thread') {
        this.gpu.dispatch(pass, pipeline, bindings, Math.ceil(c.rows / MatmulKernel.THREAD_WG), tiles);
      } else {
        const nx = Math.min(c.rows, maxDim);
        this.gpu.dispatch(pass, pipeline, bindings, nx, Math.ceil(c.rows / nx), tiles);
      }
    }
  }
}
