/**
 * Embedding gather: ids (T) u32, table (vocab, hidden) GpuWeight -> out (T, hidden) f32. Ids >= vocab give zeros
 * (never an out-of-bounds read). One dispatch per table chunk; see shaders/embedding.wgsl.
 */
import { SiftError } from '../config/errors.js';
import { assertBindingBytes, assertWeightLayout } from './matmul.js';
import { type Binding, type Gpu, type UniformArena, uniforms } from './runtime.js';
import type { GpuWeight } from './tensor.js';

export interface EmbeddingArgs {
  ids: Binding; // (T) u32 token ids
  table: GpuWeight; // (vocab, hidden)
  out: Binding; // (T, hidden) f32
  T: number;
}

export class EmbeddingKernel {
  private static readonly WG = 64;
  constructor(private readonly gpu: Gpu) {}

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: EmbeddingArgs): void {
    const { table, T } = a;
    assertWeightLayout('embedding', table);
    if (!Number.isInteger(T) || T < 0) throw new SiftError('INTERNAL', `embedding: bad token count T=${T}`);
    if (T === 0) return;
    assertBindingBytes('embedding', 'ids', a.ids, T * 4);
    assertBindingBytes('embedding', 'out', a.out, T * table.cols * 4);
    const pipeline = this.gpu.pipeline(
      'embedding',
      { F32: table.dtype === 'f32', BF16: table.dtype === 'bf16' },
      { WG: EmbeddingKernel.WG },
    );
    const nx = Math.min(T, this.gpu.caps.maxComputeWorkgroupsPerDimension);
    table.chunks.forEach((c, i) => {
      const u = arena.alloc(
        uniforms([
          ['u32', T],
          ['u32', table.cols],
          ['u32', table.rowStride],
          ['u32', c.firstRow],
          ['u32', c.rows],
          ['u32', table.rows],
          ['u32', i === 0 ? 1 : 0],
        ]),
      );
      this.gpu.dispatch(pass, pipeline, [a.ids, c.buffer, a.out, u], nx, Math.ceil(T / nx));
    });
  }
}
