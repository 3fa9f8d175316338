/**
 * The GPU side of the paged KV cache: per layer one K and one V buffer of pages.
 * kvcache/ owns the bookkeeping (which page belongs to whom); this owns the memory the pages live in.
 */
import { SiftError } from '../config/errors.js';
import type { Gpu } from '../shaders/runtime.js';
import type { ModelConfig } from './model/config.js';

export interface KvLayer {
  k: GPUBuffer; // (numPages, pageSize, kvHeads, headDim) f32
  v: GPUBuffer; // (numPages, pageSize, kvHeads, headDim) f32
}

export class KvStorage {
  readonly layers: KvLayer[] = [];
  readonly bytesPerPage: number;
  readonly bytesPerToken: number;

  constructor(
    gpu: Gpu,
    config: ModelConfig,
    readonly numPages: number,
    readonly pageSize: number,
  ) {
    const perTokenPerLayer = config.numKvHeads * config.headDim * 4; // one of K or V, f32
    this.bytesPerToken = perTokenPerLayer * 2 * config.numLayers;
    this.bytesPerPage = this.bytesPerToken * pageSize;
    const bufBytes = numPages * pageSize * perTokenPerLayer;
    if (bufBytes > gpu.caps.maxStorageBufferBindingSize) {
      throw new SiftError(
        'GPU_LIMIT',
        `KV cache of ${numPages} pages x ${pageSize} tokens needs ${bufBytes} bytes per layer buffer, over the adapter's ` +
          `binding limit ${gpu.caps.maxStorageBufferBindingSize}; lower --kv-cache-mib`,
      );
    }
    for (let i = 0; i < config.numLayers; i++) {
      this.layers.push({ k: gpu.createBuffer(`kv.k.${i}`, bufBytes), v: gpu.createBuffer(`kv.v.${i}`, bufBytes) });
    }
  }

  /** Pages that fit in `mib` MiB for this model and page size, capped so one layer buffer fits a binding. */
  static pagesFor(gpu: Gpu, config: ModelConfig, pageSize: number, mib: number): number {
    const perTokenPerLayer = config.numKvHeads * config.headDim * 4;
    const perPage = perTokenPerLayer * 2 * config.numLayers * pageSize;
    const byBudget = Math.floor((mib * 1024 * 1024) / perPage);
    const byBinding = Math.floor(gpu.caps.maxStorageBufferBindingSize / (perTokenPerLayer * pageSize));
    return Math.max(1, Math.min(byBudget, byBinding));
  }

  destroy(): void {
    for (const l of this.layers) {
      l.k.destroy();
      l.v.destroy();
    }
  }
}
