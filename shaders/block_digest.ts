/**
 * Key-block digests (shaders/block_digest.wgsl): the mean key of every 64-token key block, per KV head, kept beside
 * the cache and recomputed only for the blocks a step writes, so block selection for a prefill chunk reads one
 * digest per earlier block instead of re-pooling every earlier block's keys (which grew with the square of the
 * prompt). Run after kv_write in every step that writes the main pool (prefill and decode: a block filled by decode
 * tokens may later be read through the prefix cache).
 *
 * digests (numPages * bpp, 2, numKvHeads, headDim) 4-byte words for one layer, bpp = max(1, pageSize / blockSize):
 * a slot holds the block's mean key per KV head (part 0, f32) and, when the block is the last of a full group of
 * `groupBlocks` blocks, the group's coarse digest (part 1: per-channel min and max of its blocks' mean keys, f16
 * pairs, min at word 0, max at word headDim / 2: the layout lib/quest_bound.wgsl bounds; written by
 * shaders/block_group.ts). A block's slot lives with the physical page of its first token (`blockDigestSlot`), so
 * it moves, is shared and is freed with its page; a group's coarse digest lives with its last block, whose page
 * (as a prefix-cache page) fixes every token of the group. Key blocks are aligned to absolute positions: block c
 * covers positions [c * BS, c * BS + BS).
 */
import { BlockGroupKernel } from './block_group.js';
import { check, requireBytes, requireInts } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { requireCache } from './lib/paged.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 64;

/** struct Params of lib/block_entries.wgsl (block_digest.wgsl and block_group.wgsl). */
export const BLOCK_ENTRY_PARAMS = defineParams('block_entries', {
  numEntries: 'u32',
  nKvHeads: 'u32',
  pageSize: 'u32',
  maxPagesPerSeq: 'u32',
  blockSize: 'u32',
  bpp: 'u32',
});

/** What both kernels' uniforms are packed from. */
export interface BlockEntryShape {
  numEntries: number;
  numKvHeads: number;
  pageSize: number;
  maxPagesPerSeq: number;
  blockSize: number;
}

/** The uniform of a block_digest / block_group dispatch. */
export function blockEntryParams(arena: UniformArena, a: BlockEntryShape): Binding {
  return arena.params(BLOCK_ENTRY_PARAMS, {
    numEntries: a.numEntries,
    nKvHeads: a.numKvHeads,
    pageSize: a.pageSize,
    maxPagesPerSeq: a.maxPagesPerSeq,
    blockSize: a.blockSize,
    bpp: digestSlotsPerPage(a.pageSize, a.blockSize),
  });
}

/** Digest slots per physical page; pageSize and blockSize must divide one another. */
export function digestSlotsPerPage(pageSize: number, blockSize: number): number {
  check(
    'block_digest',
    pageSize % blockSize === 0 || blockSize % pageSize === 0,
    `key block size ${blockSize} and page size ${pageSize} must divide one another`,
  );
  return Math.max(1, pageSize / blockSize);
}

/** Bytes of one layer's block digests: (numPages * bpp, 2, numKvHeads, headDim) words (means, group bounds). */
export function blockDigestBytes(
  numPages: number,
  pageSize: number,
  blockSize: number,
  numKvHeads: number,
  headDim: number,
): number {
  return numPages * digestSlotsPerPage(pageSize, blockSize) * 2 * numKvHeads * headDim * 4;
}

/** Slot of key block c of a block-table row (its pages) in the digests. */
export function blockDigestSlot(pages: ArrayLike<number>, c: number, pageSize: number, blockSize: number): number {
  const j0 = c * blockSize;
  return pages[Math.floor(j0 / pageSize)] * digestSlotsPerPage(pageSize, blockSize) + (j0 % pageSize) / blockSize;
}

/** The positions [start, end) one block-table row writes in a step. */
export interface BlockSpan {
  row: number;
  start: number;
  end: number;
}

/**
 * (numEntries, 3) u32 (row, key block, valid tokens) for every key block the spans touch, valid = the tokens of the
 * block written so far (min(BS, end - c * BS)).
 */
export function blockDigestEntries(spans: readonly BlockSpan[], blockSize: number): Uint32Array {
  const out: number[] = [];
  for (const s of spans) {
    if (s.end <= s.start) continue;
    for (let c = Math.floor(s.start / blockSize); c <= Math.floor((s.end - 1) / blockSize); c++) {
      out.push(s.row, c, Math.min(blockSize, s.end - c * blockSize));
    }
  }
  return Uint32Array.from(out);
}

export interface BlockDigestArgs {
  kCache: PoolBinding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, the step's keys written
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32
  entries: Binding; // (numEntries, 3) u32 = blockDigestEntries(...)
  digests: PoolBinding; // (numPages * bpp, 2, numKvHeads, headDim) words, one layer, slabs of whole pages
  numEntries: number;
  numKvHeads: number; // KV heads of kCache (0: nothing to do)
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  blockSize: number;
  /** Blocks per group of the coarse level (>= 2: block_group runs after the means with the same entries; 0: none). */
  groupBlocks?: number;
}

export class BlockDigestKernel {
  private readonly group: BlockGroupKernel;
  constructor(
    private readonly gpu: Gpu,
    /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {
    this.group = new BlockGroupKernel(gpu, opts);
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: BlockDigestArgs): void {
    const K = 'block_digest';
    requireInts(
      K,
      {
        numEntries: a.numEntries,
        numKvHeads: a.numKvHeads,
        headDim: a.headDim,
        maxPagesPerSeq: a.maxPagesPerSeq,
        blockSize: a.blockSize,
      },
      { headDim: 2, blockSize: 1 },
    );
    if (a.numKvHeads === 0) return;
    const numPages = requireCache(K, a, a.kCache);
    const bpp = digestSlotsPerPage(a.pageSize, a.blockSize);
    requireBytes(
      K,
      'digests',
      a.digests,
      blockDigestBytes(numPages, a.pageSize, a.blockSize, a.numKvHeads, a.headDim),
      `(${numPages * bpp}, 2, ${a.numKvHeads}, ${a.headDim}) words`,
    );
    requireBytes(K, 'entries', a.entries, a.numEntries * 12, `(${a.numEntries}, 3) u32`);
    if (a.numEntries === 0) return;
    const HW = a.headDim / 2;
    const u = blockEntryParams(arena, a);
    const [x, y] = grid2d(this.gpu, a.numEntries * a.numKvHeads * HW, WG, this.opts.maxWorkgroupsPerDim);
    const slabs = slabDefines({ kCache: a.kCache, digests: a.digests });
    const pipe = this.gpu.pipeline('block_digest', { HW, ...slabs }, { WG }, BLOCK_ENTRY_PARAMS);
    this.gpu.dispatch(pass, pipe, [a.kCache, a.blockTable, a.entries, a.digests, u], x, y);
    if ((a.groupBlocks ?? 0) > 0) this.group.encode(pass, arena, { ...a, numPages, groupBlocks: a.groupBlocks ?? 0 });
  }
}
