/**
 * Digest hierarchy wrapper: the coarse key digests above the logical-page digests (page_digest.ts), per selection
 * slot (one sequence each): level 1 = `fan1` pages (256 tokens at 4 x 64), level 2 = `fan2` level-1 blocks (4096
 * tokens at 16), each a per-channel f16 min and max like the page digests. Layout of one layer's buffer:
 *   levels (numSlots, blocksPerSlot, numKvHeads, 2, headDim) f16 pairs, rows [0, n1) level 1, [n1, n1 + n2) level 2,
 * with n1 = ceil(maxPagesPerSeq / fan1), n2 = ceil(n1 / fan2) (`hierarchyRows`).
 *
 * Kept current lazily, when it is read: a reselecting decode row lists the level-1 and level-2 blocks written since
 * its sequence's last reselection (`levelEntries` over [covered, position]; on its first decode step [0, position],
 * which covers its prefill and any prefix-cache hit) and this kernel recomputes each from the logical-page digests
 * (read through the block table): a level-1 block from at most fan1 * lpp of them, a level-2 block from at most
 * fan1 * fan2 * lpp (not from level 1, so both levels go in one dispatch). In steady decode that is one level-1 and
 * one level-2 block per (row, head) every reselection: cheaper than updating on every KV write, with the same result
 * whenever selection reads it. The entry list sits in the step's inputs with its count in word 0 and the grid comes
 * from the step's dispatch arguments, so a captured decode step replays it.
 */
import { check, requireBytes, requireInts } from './lib/checks.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

const WG = 64;

/** struct Params of digest_levels.wgsl. */
const PARAMS = defineParams('digest_levels', {
  nKvHeads: 'u32',
  pageSize: 'u32',
  logicalPageSize: 'u32',
  lpp: 'u32',
  maxPagesPerSeq: 'u32',
  fan1: 'u32',
  fan2: 'u32',
  n1: 'u32',
  blocksPerSlot: 'u32',
});

/** Flag of a level-2 entry's block word. */
export const LEVEL2 = 0x80000000;

/** Coarse rows per slot for a block table of maxPagesPerSeq columns. */
export function hierarchyRows(
  maxPagesPerSeq: number,
  fan1: number,
  fan2: number,
): { n1: number; n2: number; blocksPerSlot: number } {
  const n1 = Math.ceil(maxPagesPerSeq / fan1);
  const n2 = Math.ceil(n1 / fan2);
  return { n1, n2, blocksPerSlot: n1 + n2 };
}

/** Bytes of one layer's coarse digests: (numSlots, blocksPerSlot, numKvHeads, 2, headDim) f16. */
export function levelsBytes(numSlots: number, blocksPerSlot: number, numKvHeads: number, headDim: number): number {
  return numSlots * blocksPerSlot * numKvHeads * 2 * headDim * 2;
}

/** Tokens [start, end) of one sequence written this step (end = its length after the step), with its rows. */
export interface LevelSpan {
  blockRow: number;
  slot: number;
  start: number;
  end: number;
}

/**
 * The entry list (count in word 0, then (blockRow, slot, block | LEVEL2 for level 2, len) from word 4) of the
 * level-1 and level-2 blocks the spans touched, each block once per span.
 */
export function levelEntries(spans: readonly LevelSpan[], pageSize: number, fan1: number, fan2: number): Uint32Array {
  const out: number[] = [0, 0, 0, 0];
  for (const [tokens, flag] of [
    [fan1 * pageSize, 0],
    [fan1 * fan2 * pageSize, LEVEL2],
  ]) {
    for (const s of spans) {
      if (s.end <= s.start) continue;
      for (let b = Math.floor(s.start / tokens); b <= Math.floor((s.end - 1) / tokens); b++) {
        out.push(s.blockRow, s.slot, (b | flag) >>> 0, s.end);
      }
    }
  }
  out[0] = (out.length - 4) / 4;
  return Uint32Array.from(out);
}

/** Level entries a step can need at most: every decode row from token 0 (its first decode step). */
export function maxLevelEntries(maxRows: number, maxPagesPerSeq: number, fan1: number, fan2: number): number {
  const r = hierarchyRows(maxPagesPerSeq, fan1, fan2);
  return maxRows * (r.n1 + r.n2);
}

/** Grid x of one level's dispatch for `numEntries` entries. */
export function levelGrid(numEntries: number, numKvHeads: number, headDim: number): number {
  return Math.ceil((numEntries * numKvHeads * (headDim / 2)) / WG);
}

export interface DigestLevelsArgs {
  digests: PoolBinding; // (numPages, pageSize / logicalPageSize, numKvHeads, 2, headDim) f16 pairs, current
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32
  entries: Binding; // 4 + (E, 4) u32 entries (levelEntries)
  levels: PoolBinding; // (numSlots, blocksPerSlot, numKvHeads, 2, headDim) f16 pairs
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  logicalPageSize: number;
  maxPagesPerSeq: number;
  fan1: number;
  fan2: number;
  /** Grid: direct (the entry count) or the 3 u32 at byte `offset` of `buffer`. */
  grid: { entries: number } | { buffer: GPUBuffer; offset: number };
}

export class DigestLevelsKernel {
  constructor(private readonly gpu: Gpu) {}

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: DigestLevelsArgs): void {
    const K = 'digest_levels';
    requireInts(
      K,
      {
        numKvHeads: a.numKvHeads,
        headDim: a.headDim,
        pageSize: a.pageSize,
        logicalPageSize: a.logicalPageSize,
        maxPagesPerSeq: a.maxPagesPerSeq,
        fan1: a.fan1,
        fan2: a.fan2,
      },
      { headDim: 2, pageSize: 1, logicalPageSize: 1, maxPagesPerSeq: 1, fan1: 1, fan2: 1 },
    );
    if (a.numKvHeads === 0) return;
    check(K, a.headDim % 2 === 0, `headDim ${a.headDim} must be even`);
    check(K, a.pageSize % a.logicalPageSize === 0, `logicalPageSize must divide pageSize ${a.pageSize}`);
    const rows = hierarchyRows(a.maxPagesPerSeq, a.fan1, a.fan2);
    const slotBytes = levelsBytes(1, rows.blocksPerSlot, a.numKvHeads, a.headDim);
    requireBytes(
      K,
      'levels',
      a.levels,
      slotBytes,
      `(numSlots, ${rows.blocksPerSlot}, ${a.numKvHeads}, 2, ${a.headDim})`,
    );
    requireBytes(K, 'entries', a.entries, 16, '4 + (E, 4) u32');
    const HW = a.headDim / 2;
    const slabs = slabDefines({ digests: a.digests, levels: a.levels });
    const pipe = this.gpu.pipeline('digest_levels', { HW, ...slabs }, { WG }, PARAMS);
    const u = arena.params(PARAMS, {
      nKvHeads: a.numKvHeads,
      pageSize: a.pageSize,
      logicalPageSize: a.logicalPageSize,
      lpp: a.pageSize / a.logicalPageSize,
      maxPagesPerSeq: a.maxPagesPerSeq,
      fan1: a.fan1,
      fan2: a.fan2,
      n1: rows.n1,
      blocksPerSlot: rows.blocksPerSlot,
    });
    const bindings = [a.digests, a.blockTable, a.entries, a.levels, u];
    const g = a.grid;
    if ('buffer' in g) this.gpu.dispatchIndirect(pass, pipe, bindings, g.buffer, g.offset);
    else this.gpu.dispatch(pass, pipe, bindings, levelGrid(g.entries, a.numKvHeads, a.headDim));
  }
}
