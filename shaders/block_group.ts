/**
 * Coarse digests of groups of key blocks (shaders/block_group.wgsl), the level above the block digests in
 * hierarchical block selection (shaders/block_select.ts with `groupBlocks` > 0): when a step fills the last block of
 * a group of G consecutive 64-token blocks, the group's per-channel min and max over its blocks' mean keys go into
 * part 1 of that block's digest slot as f16 pairs (lib/quest_bound.wgsl's layout, so selection bounds a group with
 * the same code as decode's hier_select). Run after BlockDigestKernel with the same entry list, in every step that
 * writes block digests; a group is written once, when its last block fills.
 */
import { BLOCK_ENTRY_PARAMS, blockDigestBytes, blockEntryParams } from './block_digest.js';
import { requireBytes, requireInts } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 64;

export interface BlockGroupArgs {
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32
  entries: Binding; // (numEntries, 3) u32 (row, key block, valid tokens), as block_digest's
  digests: PoolBinding; // (numPages * bpp, 2, numKvHeads, headDim) words, this step's means written
  numEntries: number;
  numPages: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  blockSize: number;
  groupBlocks: number; // G >= 2
}

export class BlockGroupKernel {
  constructor(
    private readonly gpu: Gpu,
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {}

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: BlockGroupArgs): void {
    const K = 'block_group';
    requireInts(
      K,
      {
        numEntries: a.numEntries,
        numKvHeads: a.numKvHeads,
        headDim: a.headDim,
        blockSize: a.blockSize,
        groupBlocks: a.groupBlocks,
      },
      { headDim: 2, blockSize: 1, groupBlocks: 2 },
    );
    if (a.numKvHeads === 0 || a.numEntries === 0) return;
    requireBytes(
      K,
      'digests',
      a.digests,
      blockDigestBytes(a.numPages, a.pageSize, a.blockSize, a.numKvHeads, a.headDim),
      `(slots, 2, ${a.numKvHeads}, ${a.headDim}) words`,
    );
    requireBytes(K, 'entries', a.entries, a.numEntries * 12, `(${a.numEntries}, 3) u32`);
    const HW = a.headDim / 2;
    const u = blockEntryParams(arena, a);
    const [x, y] = grid2d(this.gpu, a.numEntries * a.numKvHeads * HW, WG, this.opts.maxWorkgroupsPerDim);
    const pipe = this.gpu.pipeline(
      'block_group',
      { HW, GROUP: a.groupBlocks, ...slabDefines({ digests: a.digests }) },
      { WG },
      BLOCK_ENTRY_PARAMS,
    );
    this.gpu.dispatch(pass, pipe, [a.blockTable, a.entries, a.digests, u], x, y);
  }
}
