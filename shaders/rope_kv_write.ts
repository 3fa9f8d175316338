/**
 * RoPE + paged KV write in one dispatch (shaders/rope_kv_write.wgsl), the step after the fused q/k/v projection:
 * from qkv (T, H + 2 KV, headDim) f32 it writes the rotated queries q (T, H, headDim) f32, the rotated keys and the
 * values of KV heads [0, cacheHeads) into one layer's f16 kCache / vCache (numPages, pageSize, cacheHeads,
 * headDim / 2) u32 pairs through the block table (the main pool's retrieval heads, model/kv-storage.ts), and
 * optionally
 *  - `digest`: for the decode tokens [0, numDecode) (one per sequence, the batch's first tokens) the key digest of
 *    the logical page each lands in, recomputed from the cache's earlier slots and the new key (the same f16 min and
 *    max page_digest.wgsl writes; prefill tokens need page_digest after this kernel);
 *  - `fresh`: RoPE(k) and v of every KV head as f32 rows (T, KV, headDim), for the streaming heads' kernels.
 * `invFreq` comes from ropeInvFreq (shaders/rope.ts). headDim must be even.
 *
 * The caches and digests may be pools split into slabs (shaders/lib/slabs.ts). When one dispatch would bind more
 * storage buffers than the adapter allows per stage, the kernel runs as two: q, the K cache, digests and fresh rows,
 * then the V cache (the same results; one more dispatch per layer only in such configurations).
 */
import { SiftError } from '../config/errors.js';
import { bindingBytes } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { cachePages } from './lib/paged.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, Slabs, slabDefines } from './lib/slabs.js';
import { digestBytes } from './page_digest.js';
import type { Binding, Gpu, KernelBinding, UniformArena } from './runtime.js';

const WG = 64;

/** struct Params of rope_kv_write.wgsl. */
const PARAMS = defineParams('rope_kv_write', {
  tokens: 'u32',
  nHeads: 'u32',
  nKvHeads: 'u32',
  half: 'u32',
  nCache: 'u32',
  pageSize: 'u32',
  maxPagesPerSeq: 'u32',
  numPages: 'u32',
  numDecode: 'u32',
  logicalPageSize: 'u32',
  lpp: 'u32',
});

export interface RopeKvWriteArgs {
  qkv: Binding; // (T, numHeads + 2 numKvHeads, headDim) f32, the fused projection's output
  q: Binding; // (T, numHeads, headDim) f32, written (must not alias qkv)
  kCache: PoolBinding; // (numPages, pageSize, cacheHeads, headDim / 2) u32 f16 pairs, one layer
  vCache: PoolBinding; // (numPages, pageSize, cacheHeads, headDim / 2) u32 f16 pairs, one layer
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each logical page
  tokenSeq: Binding; // (T) u32 block-table row of each token
  positions: Binding; // (T) u32 absolute position of each token, < 2^24
  invFreq: Binding; // (headDim / 2) f32
  T: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  /** KV heads [0, cacheHeads) go to the caches; default numKvHeads. 0 writes no cache. */
  cacheHeads?: number;
  /** Digests of the decode tokens' logical pages: (numPages, pageSize / logicalPageSize, cacheHeads, 2, headDim) f16. */
  digest?: { digests: PoolBinding; logicalPageSize: number; numDecode: number };
  /** RoPE(k) and v of every KV head as f32 rows (T, numKvHeads, headDim). */
  fresh?: { k: Binding; v: Binding };
}

export class RopeKvWriteKernel {
  /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {}

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: RopeKvWriteArgs): void {
    const K = 'rope_kv_write';
    const cacheHeads = a.cacheHeads ?? a.numKvHeads;
    const ints = [a.T, a.numHeads, a.numKvHeads, a.headDim, a.pageSize, a.maxPagesPerSeq, cacheHeads];
    if (
      !ints.every((v) => Number.isInteger(v) && v >= 0) ||
      a.numHeads < 1 ||
      a.numKvHeads < 1 ||
      a.headDim < 2 ||
      a.headDim % 2 !== 0 ||
      a.pageSize < 1 ||
      cacheHeads > a.numKvHeads
    ) {
      throw new SiftError(
        'INTERNAL',
        `${K}: bad shape T=${a.T} heads=${a.numHeads}/${a.numKvHeads} cacheHeads=${cacheHeads} headDim=${a.headDim} (even) pageSize=${a.pageSize}`,
      );
    }
    if (a.T === 0) return;
    const HW = a.headDim / 2;
    const rowHeads = a.numHeads + 2 * a.numKvHeads;
    const need = (name: string, b: KernelBinding, bytes: number) => {
      if (bindingBytes(b) < bytes) {
        throw new SiftError('INTERNAL', `${K}: binding ${name} holds ${bindingBytes(b)} bytes, needs ${bytes}`);
      }
    };
    need('qkv', a.qkv, a.T * rowHeads * a.headDim * 4);
    need('q', a.q, a.T * a.numHeads * a.headDim * 4);
    need('tokenSeq', a.tokenSeq, a.T * 4);
    need('positions', a.positions, a.T * 4);
    need('invFreq', a.invFreq, HW * 4);
    const numPages = cacheHeads > 0 ? cachePages(a.kCache, a.pageSize, cacheHeads, a.headDim) : 0;
    if (cacheHeads > 0) {
      if (numPages < 1 || cachePages(a.vCache, a.pageSize, cacheHeads, a.headDim) !== numPages) {
        throw new SiftError(
          'INTERNAL',
          `${K}: caches do not hold the same whole pages of (${a.pageSize}, ${cacheHeads}, ${a.headDim}) f16`,
        );
      }
      if (numPages * a.pageSize * cacheHeads * HW >= 2 ** 32)
        throw new SiftError('INTERNAL', `${K}: cache exceeds u32 indexing`);
    }
    const d = a.digest;
    let lpp = 1;
    if (d) {
      const L = d.logicalPageSize;
      if (
        !Number.isInteger(L) ||
        L < 1 ||
        a.pageSize % L !== 0 ||
        !Number.isInteger(d.numDecode) ||
        d.numDecode < 0 ||
        d.numDecode > a.T
      ) {
        throw new SiftError('INTERNAL', `${K}: bad digest shape L=${L} numDecode=${d.numDecode} T=${a.T}`);
      }
      lpp = a.pageSize / L;
      if (cacheHeads > 0) need('digests', d.digests, digestBytes(numPages, a.pageSize, L, cacheHeads, a.headDim));
    }
    if (a.fresh) {
      need('fresh k', a.fresh.k, a.T * a.numKvHeads * a.headDim * 4);
      need('fresh v', a.fresh.v, a.T * a.numKvHeads * a.headDim * 4);
    }
    const items = a.T * (a.numHeads + a.numKvHeads) * HW;
    if (items >= 2 ** 32 || a.T * rowHeads * a.headDim >= 2 ** 32)
      throw new SiftError('INTERNAL', `${K}: shapes exceed u32 indexing`);
    const u = arena.params(PARAMS, {
      tokens: a.T,
      nHeads: a.numHeads,
      nKvHeads: a.numKvHeads,
      half: HW,
      nCache: cacheHeads,
      pageSize: a.pageSize,
      maxPagesPerSeq: a.maxPagesPerSeq,
      numPages,
      numDecode: d?.numDecode ?? 0,
      logicalPageSize: d?.logicalPageSize ?? 1,
      lpp,
    });
    const base = { DIGEST: !!d, FRESH: !!a.fresh };
    const slabs = (b: KernelBinding | null | undefined) => (b ? (b instanceof Slabs ? b.numSlabs : 1) : 0);
    const storage = 6 + slabs(a.kCache) + slabs(a.vCache) + slabs(d?.digests) + (a.fresh ? 2 : 0);
    const split = storage > this.gpu.caps.maxStorageBuffersPerShaderStage;
    const kv = slabDefines({ kCache: a.kCache, vCache: a.vCache, digests: d?.digests });
    const bindings = (k: boolean, v: boolean): (KernelBinding | null)[] => [
      a.qkv,
      k ? a.q : null,
      k ? a.kCache : null,
      v ? a.vCache : null,
      a.blockTable,
      a.tokenSeq,
      a.positions,
      k ? a.invFreq : null,
      u,
      k && d ? d.digests : null,
      k && a.fresh ? a.fresh.k : null,
      k && a.fresh ? a.fresh.v : null,
    ];
    if (!split) {
      const pipeline = this.gpu.pipeline('rope_kv_write', { ...base, ...kv }, { WG }, PARAMS);
      const [x, y] = grid2d(this.gpu, items, WG, this.opts.maxWorkgroupsPerDim);
      this.gpu.dispatch(pass, pipeline, bindings(true, true), x, y);
      return;
    }
    const pk = this.gpu.pipeline('rope_kv_write', { ...base, ...kv, SPLIT_K: true }, { WG }, PARAMS);
    const [x, y] = grid2d(this.gpu, items, WG, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(pass, pk, bindings(true, false), x, y);
    if (cacheHeads === 0) return;
    const pv = this.gpu.pipeline(
      'rope_kv_write',
      { ...base, ...kv, DIGEST: false, FRESH: false, SPLIT_V: true },
      { WG },
      PARAMS,
    );
    const [xv, yv] = grid2d(this.gpu, a.T * a.numKvHeads * HW, WG, this.opts.maxWorkgroupsPerDim);
    this.gpu.dispatch(pass, pv, bindings(false, true), xv, yv);
  }
}
