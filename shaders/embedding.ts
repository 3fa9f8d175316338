/**
 * Embedding gather: ids (T) u32, table (vocab, hidden) GpuWeight -> out (T, hidden) f32. Ids >= vocab give zeros
 * (never an out-of-bounds read). Any weight dtype, q8 / q4 included. One dispatch per table chunk; see
 * shaders/embedding.wgsl.
 */
import { requireBytes, requireInts } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import { assertWeightLayout } from './matmul.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';
import type { GpuWeight } from './tensor.js';

/** struct Params of embedding.wgsl. */
const PARAMS = defineParams('embedding', {
  T: 'u32',
  hidden: 'u32',
  rowStride: 'u32',
  firstRow: 'u32',
  chunkRows: 'u32',
  vocab: 'u32',
  zeroFill: 'u32',
  groupBlocks: 'u32',
  groupsPerRow: 'u32',
  scale: 'f32',
});

export interface EmbeddingArgs {
  ids: Binding; // (T) u32 token ids
  table: GpuWeight; // (vocab, hidden)
  out: Binding; // (T, hidden) f32
  T: number;
  /** Multiplies every row (Gemma: sqrt(hidden) rounded to the table's dtype); default 1. */
  scale?: number;
}

export class EmbeddingKernel {
  private static readonly WG = 64;
  constructor(private readonly gpu: Gpu) {}

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: EmbeddingArgs): void {
    const { table, T } = a;
    assertWeightLayout('embedding', table);
    requireInts('embedding', { T });
    if (T === 0) return;
    requireBytes('embedding', 'ids', a.ids, T * 4, `(${T}) u32`);
    requireBytes('embedding', 'out', a.out, T * table.cols * 4, `(${T}, ${table.cols}) f32`);
    const quant = table.quant;
    const pipeline = this.gpu.pipeline(
      'embedding',
      {
        F32: table.dtype === 'f32',
        BF16: table.dtype === 'bf16',
        Q8: table.dtype === 'q8',
        Q4: table.dtype === 'q4',
        QUANT: quant !== undefined,
        SCALE_F16: quant?.scaleF16 ?? false,
        PACKED4X8: this.gpu.caps.packed4x8,
      },
      { WG: EmbeddingKernel.WG },
      PARAMS,
    );
    const nx = Math.min(T, this.gpu.caps.maxComputeWorkgroupsPerDimension);
    table.chunks.forEach((c, i) => {
      const u = arena.params(PARAMS, {
        T,
        hidden: table.cols,
        rowStride: table.rowStride,
        firstRow: c.firstRow,
        chunkRows: c.rows,
        vocab: table.rows,
        zeroFill: i === 0 ? 1 : 0,
        groupBlocks: quant?.groupBlocks ?? 1,
        groupsPerRow: quant?.groupsPerRow ?? 1,
        scale: a.scale ?? 1,
      });
      const bindings: Binding[] = [a.ids, c.buffer, a.out, u];
      if (c.scales) bindings.push(c.scales);
      this.gpu.dispatch(pass, pipeline, bindings, nx, Math.ceil(T / nx));
    });
  }
}
