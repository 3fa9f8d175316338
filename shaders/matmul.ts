/**
 * Dense linear layer as HF's nn.Linear: out (T, rows) = x (T, cols) @ W^T (+ bias), W (rows, cols) a GpuWeight in
 * f32, packed f16/bf16 pairs or q8/q4 blocks with group scales (dequantized in the kernel), split into row chunks (one
 * dispatch per chunk, each writing its rows of out).
 * T = 1 is the decode matvec; T > 1 tiles tokens so every weight element is read once per tile of tokens.
 *
 * Fusions (shaders/matmul_common.wgsl), each optional and taken by every strategy below (the tiled GEMM included):
 * `norm` folds an RMSNorm in front (x is the raw residual stream), `glu` a SwiGLU behind (the weight interleaves gate
 * and up rows), `accumulate` a residual add behind (out += x @ W^T).
 *
 * Two strategies, picked per adapter (override with `variant`):
 *  - 'thread' (shaders/matmul.wgsl): one invocation per (row, token tile). Fastest on CPU adapters (lavapipe).
 *  - 'workgroup' (shaders/matmul_wg.wgsl): one workgroup per (row, token tile) with a subgroup / workgroup
 *    reduction. Needed on real GPUs to read weights at the memory-copy rate.
 * Prefill on GPUs ('workgroup', T >= `tiledMinTokens`, default 64): the tiled GEMM (shaders/matmul_tiled.wgsl), 64 x 64
 * tiles staged in workgroup memory with 4 x 4 register blocks per thread, every weight element read once per tile of
 * 64 tokens, for every weight dtype (its blocks come through matmul_common's wBlock, q8 / q4 dequantized in the
 * kernel). On CPU adapters ('thread', T >= `rowTileMinTokens`, default 16) prefill takes the register tiles
 * (shaders/matmul_rows.wgsl): 2 weight rows x 16 tokens per invocation, x staged in workgroup memory. On lavapipe a
 * load whose address differs across SIMD lanes is one bounds-checked scalar load per lane, so the weight loads (the
 * only such loads) must each serve many tokens, and x must come from addresses every lane shares; the weight's shape
 * is compiled in (a pipeline per shape). About 2x the per-row kernel's GFLOP/s there for f32 / bf16 weights, about
 * the same for f16 / q8 / q4, whose conversion bounds both (bench/results/PREFILL.md, "A register tile per
 * invocation"); the GPU tiled layout and the earlier CPU layouts ran at 0.1-0.5x of the per-row kernel.
 */
import { SiftError } from '../config/errors.js';
import { requireBytes, requireInts } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';
import type { GpuWeight } from './tensor.js';

/** struct Params of matmul_common.wgsl (every variant). */
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
  eps: 'f32',
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
  /**
   * Smallest T that takes the tiled GEMM (default 64 for the 'workgroup' variant; Infinity, never, for 'thread':
   * on CPU adapters the register tiles of `rowTileMinTokens` are the faster prefill GEMM).
   */
  tiledMinTokens?: number;
  /**
   * 'thread' variant: smallest T that takes the register-tile kernel (shaders/matmul_rows.wgsl: 2 weight rows x
   * 16 tokens per invocation, x staged in workgroup memory); default 16. Infinity keeps every T on the per-row kernel.
   */
  rowTileMinTokens?: number;
}

export interface MatmulArgs {
  x: Binding; // (T, cols) f32; must not alias out
  w: GpuWeight; // (rows, cols); with glu (2I, cols) rows interleaved gate_0, up_0, gate_1, ...
  bias?: Binding; // (rows) f32
  out: Binding; // (T, rows) f32; with glu (T, rows / 2)
  T: number;
  /** RMSNorm folded in front: out = (rmsnorm(x) * weight) @ W^T; weight (cols) f32. */
  norm?: { weight: Binding; eps: number };
  /**
   * SwiGLU behind: out[t, i] = silu(gate_i . x_t) * (up_i . x_t) over the interleaved rows (no bias); 'gelu': GeGLU,
   * gelu_tanh(gate_i . x_t) * (up_i . x_t) (Gemma).
   */
  glu?: boolean | 'gelu';
  /** Residual add behind: out += result. */
  accumulate?: boolean;
  /**
   * Write into columns [rowOffset, rowOffset + w.rows) of an out of `rows` columns per token (one part of a
   * row-stacked weight whose parts differ in format); bias is then (rows) f32, indexed like out. Not with glu.
   */
  into?: { rowOffset: number; rows: number };
}

/** Which fusions of matmul_common.wgsl a pipeline compiles in. */
interface Fusions {
  norm: boolean;
  glu: boolean;
  /** GLU with GELU's tanh form instead of SiLU. */
  gelu: boolean;
  acc: boolean;
}

/** Workgroup memory the 'workgroup' variant may use for its partial sums (the WebGPU default limit). */
const WG_PARTIAL_BYTES = 16384;

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

/** vec4 columns the register-tile kernel walks: a row's whole 8-element blocks (stored zero-padded to them). */
function rowTileVec4Columns(w: GpuWeight): number {
  return 2 * Math.ceil(w.cols / 8);
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
  /** Tokens and weight rows per workgroup tile of the tiled GEMM. */
  private static readonly TILE_TOKENS = 64;
  private static readonly TILE_ROWS = 64;
  readonly tiledMinTokens: number;
  /** Tokens per invocation of the register-tile kernel ('thread' variant prefill). */
  static readonly ROW_TILE_TOKENS = 16;
  readonly rowTileMinTokens: number;
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
    this.tiledMinTokens =
      opts.tiledMinTokens ?? (this.variant === 'workgroup' ? MatmulKernel.TILE_TOKENS : Number.POSITIVE_INFINITY);
    this.rowTileMinTokens =
      this.variant === 'thread' ? (opts.rowTileMinTokens ?? MatmulKernel.ROW_TILE_TOKENS) : Number.POSITIVE_INFINITY;
  }

  /** Workgroup size of the 'workgroup' variant for `w`: enough invocations to cover a row's 8-element blocks. */
  private workgroupSize(w: GpuWeight): number {
    return Math.min(256, this.gpu.caps.maxComputeInvocationsPerWorkgroup, Math.max(32, nextPow2(w.rowStride / 8)));
  }

  /** Tokens per tile for T tokens: 1 for a matvec; the 'workgroup' variant keeps its partial sums in 16 KiB. */
  tokenTileFor(w: GpuWeight, T: number, accumulators: number): number {
    if (T === 1) return 1;
    let tt = Math.min(this.tokenTile, T);
    if (this.variant === 'workgroup') {
      const wg = this.workgroupSize(w);
      tt = Math.max(1, Math.min(tt, Math.floor(WG_PARTIAL_BYTES / (4 * accumulators * wg))));
    }
    return tt;
  }

  /** Whether `T` tokens take the tiled GEMM (shaders/matmul_tiled.wgsl) rather than the per-row kernels. */
  isTiled(T: number): boolean {
    return T >= this.tiledMinTokens;
  }

  /** Smallest T that takes a prefill GEMM (the tiled GEMM, or the register tiles of CPU adapters). */
  get prefillMinTokens(): number {
    return Math.min(this.tiledMinTokens, this.rowTileMinTokens);
  }

  /** Whether `T` tokens take the register-tile kernel (shaders/matmul_rows.wgsl, 'thread' variant). */
  isRowTiled(T: number): boolean {
    return !this.isTiled(T) && T >= this.rowTileMinTokens;
  }

  /**
   * vec4 columns of x the register-tile kernel stages per step (an even number): the row's whole 8-element blocks in
   * as few equal steps as workgroup memory allows (besides the staged x, the kernel keeps 4 bytes per invocation).
   */
  rowTileColumns(w: GpuWeight): number {
    const bytes = this.gpu.caps.maxComputeWorkgroupStorageSize - 4 * MatmulKernel.THREAD_WG;
    const fit = Math.floor(bytes / (16 * MatmulKernel.ROW_TILE_TOKENS) / 2) * 2;
    if (fit < 2) throw new SiftError('INTERNAL', `matmul: ${bytes} bytes of workgroup memory stage no x tile`);
    const need = rowTileVec4Columns(w);
    const steps = Math.ceil(need / fit);
    return 2 * Math.ceil(need / steps / 2);
  }

  /** The weight dtype, x layout and fusion defines of matmul_common.wgsl. */
  private commonDefines(w: GpuWeight, f: Fusions) {
    return {
      F32: w.dtype === 'f32',
      BF16: w.dtype === 'bf16',
      Q8: w.dtype === 'q8',
      Q4: w.dtype === 'q4',
      SCALE_F16: w.quant?.scaleF16 ?? false,
      PACKED4X8: this.packed4x8,
      XV4: w.cols % 4 === 0,
      NORM: f.norm,
      NORM_BINDING: w.quant ? 6 : 5,
      GLU: f.glu,
      GELU: f.gelu,
      ACC: f.acc,
    };
  }

  /** The tiled GEMM's pipeline and weight rows per workgroup (x of the grid). */
  /** The tiled GEMM's pipeline. */
  private tiledPipeline(w: GpuWeight, f: Fusions): GPUComputePipeline {
    return this.gpu.pipeline('matmul_tiled', this.commonDefines(w, f), {}, PARAMS);
  }

  private pipelineFor(w: GpuWeight, tt: number, f: Fusions): GPUComputePipeline {
    const defines = { ...this.commonDefines(w, f), TT: tt };
    if (this.variant === 'thread') return this.gpu.pipeline('matmul', defines, { WG: MatmulKernel.THREAD_WG }, PARAMS);
    const wg = this.workgroupSize(w);
    return this.gpu.pipeline('matmul_wg', { ...defines, WG: wg, SUBGROUPS: this.subgroups }, {}, PARAMS);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: MatmulArgs): void {
    const { w, T } = a;
    assertWeightLayout('matmul', w);
    requireInts('matmul', { T });
    if (T === 0) return;
    const glu = a.glu === true || a.glu === 'gelu';
    // GLU: output row i reads weight rows 2i and 2i + 1, so every chunk starts on an even row and holds pairs
    const per = glu ? 2 : 1;
    if (glu && (a.bias || w.rows % 2 !== 0 || w.chunks.some((c) => c.firstRow % 2 !== 0 || c.rows % 2 !== 0))) {
      throw new SiftError('INTERNAL', `matmul: glu needs a bias-free weight of whole gate/up row pairs (${w.name})`);
    }
    const outRows = w.rows / per;
    const into = a.into ?? { rowOffset: 0, rows: outRows };
    if (
      a.into &&
      (glu || !Number.isInteger(into.rowOffset) || into.rowOffset < 0 || into.rowOffset + outRows > into.rows)
    ) {
      throw new SiftError(
        'INTERNAL',
        `matmul: ${w.name} does not fit columns [${into.rowOffset}, +${outRows}) of ${into.rows}`,
      );
    }
    requireBytes('matmul', 'x', a.x, T * w.cols * 4, `(${T}, ${w.cols}) f32`);
    requireBytes('matmul', 'out', a.out, T * into.rows * 4, `(${T}, ${into.rows}) f32`);
    if (a.bias) requireBytes('matmul', 'bias', a.bias, into.rows * 4, `(${into.rows}) f32`);
    if (a.norm) {
      requireBytes('matmul', 'norm weight', a.norm.weight, w.cols * 4, `(${w.cols}) f32`);
      if (!(a.norm.eps >= 0)) throw new SiftError('INTERNAL', `matmul: bad RMSNorm eps ${a.norm.eps}`);
    }
    const flags: Fusions = { norm: a.norm !== undefined, glu, gelu: a.glu === 'gelu', acc: a.accumulate === true };
    const strideV = w.dtype === 'f32' ? w.rowStride / 4 : w.rowStride / 8; // vec4 words, or q8/q4 blocks of 8
    const maxDim = this.gpu.caps.maxComputeWorkgroupsPerDimension;
    const bindingsOf = (c: GpuWeight['chunks'][number]): Binding[] => {
      const u = arena.params(PARAMS, {
        rows: c.rows / per,
        cols: w.cols,
        strideV,
        T,
        rowOffset: into.rowOffset + c.firstRow / per,
        outStride: into.rows,
        hasBias: a.bias ? 1 : 0,
        groupBlocks: w.quant?.groupBlocks ?? 1,
        groupsPerRow: w.quant?.groupsPerRow ?? 1,
        eps: a.norm?.eps ?? 0,
      });
      // bindings 0-4, then a quantized weight's scales (5), then the RMSNorm weight (5 or 6: NORM_BINDING)
      const bindings: Binding[] = [a.x, c.buffer, a.out, u, a.bias ?? this.noBias];
      if (w.quant) {
        if (!c.scales) throw new SiftError('INTERNAL', `matmul: quantized weight ${w.name} has a chunk without scales`);
        bindings.push(c.scales);
      }
      if (a.norm) bindings.push(a.norm.weight);
      return bindings;
    };
    if (this.isTiled(T)) {
      const pipeline = this.tiledPipeline(w, flags);
      const tokenTiles = Math.ceil(T / MatmulKernel.TILE_TOKENS);
      for (const c of w.chunks) {
        const nx = Math.ceil(c.rows / MatmulKernel.TILE_ROWS); // 64 is even: a workgroup holds whole gate/up pairs
        if (nx > maxDim || tokenTiles > maxDim) {
          throw new SiftError('INTERNAL', `matmul: ${nx} x ${tokenTiles} workgroups exceed the grid limit ${maxDim}`);
        }
        this.gpu.dispatch(pass, pipeline, bindingsOf(c), nx, tokenTiles);
      }
      return;
    }
    if (this.isRowTiled(T)) {
      const tt = MatmulKernel.ROW_TILE_TOKENS;
      const shape = { C4N: rowTileVec4Columns(w), STRIDEV: strideV };
      const defines = { ...this.commonDefines(w, flags), ...shape, TT: tt, KC: this.rowTileColumns(w) };
      const pipeline = this.gpu.pipeline('matmul_rows', defines, { WG: MatmulKernel.THREAD_WG }, PARAMS);
      const tiles = Math.ceil(T / tt);
      for (const c of w.chunks) {
        // an invocation owns 2 weight rows: 2 output rows, or with glu 1 (its gate and up rows)
        const nx = Math.ceil(c.rows / 2 / MatmulKernel.THREAD_WG);
        if (nx > maxDim || tiles > maxDim) {
          throw new SiftError('INTERNAL', `matmul: ${nx} x ${tiles} workgroups exceed the grid limit ${maxDim}`);
        }
        this.gpu.dispatch(pass, pipeline, bindingsOf(c), nx, tiles);
      }
      return;
    }
    const tt = this.tokenTileFor(w, T, 1 + Number(flags.norm) + Number(glu));
    const tiles = Math.ceil(T / tt);
    const pipeline = this.pipelineFor(w, tt, flags);
    for (const c of w.chunks) {
      const rows = c.rows / per;
      const bindings = bindingsOf(c);
      if (this.variant === 'thread') {
        this.gpu.dispatch(pass, pipeline, bindings, Math.ceil(rows / MatmulKernel.THREAD_WG), tiles);
      } else {
        const nx = Math.min(rows, maxDim);
        this.gpu.dispatch(pass, pipeline, bindings, nx, Math.ceil(rows / nx), tiles);
      }
    }
  }
}
