/**
 * Block selection for block-sparse prefill (MInference's dynamic block sparsity): for a prefill chunk, mean-pool the
 * queries of each 64-token query block over the query heads of each KV head, score every causal key block by pooled
 * q . its kept digest (the mean key, shaders/block_digest.ts, written when the block was), and keep per (query block,
 * KV head): the sink block 0, the diagonal block, the `localBlocks` blocks just before it, and the `topBlocks`
 * best-scoring other causal blocks. GQA: the G query heads of a KV head share one list (they share one query tile in
 * prefill_attention, and the group's pooled queries score the block together, as decode's page selection does).
 *
 * Blocks are aligned to absolute positions: query / key block b covers positions [b*BS, b*BS + BS). A query block of
 * a chunk holds the chunk's tokens inside that span (a partial block at a chunk edge pools only those tokens).
 * Flat selection (`groupBlocks` 0) reads one digest per earlier block per (query block, KV head): its cost per chunk
 * grows linearly with the prompt, where re-pooling every earlier block's keys per chunk grew with its square.
 * Hierarchical selection (`groupBlocks` G > 0, the default of PrefillAttention) first bounds groups of G blocks by
 * their coarse digests (shaders/block_group.ts) and scores only the blocks of the best topBlocks + margin groups,
 * the partial group and the local / diagonal blocks: per chunk, a fixed part set by the budget plus one coarse digest
 * per G blocks (bytes: `selectionBytes`).
 *
 * Host plan (`planPrefillBlocks`, once per step, shared by every layer):
 *   qBlocks (numQBlocks, 4) u32: [block-table row, firstToken, firstPos, count] - tokens firstToken ..
 *     firstToken+count-1 of the step, at positions firstPos.., all in block firstPos / BS.
 */
import { SiftError } from '../config/errors.js';
import { digestSlotsPerPage } from './block_digest.js';
import { PAGED_HEADS, pagedHeads } from './lib/attention.js';
import { check, MAX_KV_HEADS, requireBytes, requireHeads, requireInts } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import { type PoolBinding, slabDefines } from './lib/slabs.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

/** u32 words per qBlocks entry. */
export const QBLOCK_WORDS = 4;
/** struct Params of block_select.wgsl. */
const PARAMS = defineParams('block_select', {
  ...PAGED_HEADS,
  blockSize: 'u32',
  numQBlocks: 'u32',
  topBlocks: 'u32',
  localBlocks: 'u32',
  listStride: 'u32',
  qRowHeads: 'u32',
  bpp: 'u32',
  beam: 'u32',
  modes: 'array<vec4<u32>, 16>',
});

/** Per-KV-head attention kind for prefill. */
export const HeadMode = { dense: 0, sparse: 1, lambda: 2 } as const;
export type HeadModeValue = (typeof HeadMode)[keyof typeof HeadMode];

/** The query blocks of one prefill step (host side; upload qBlocks once per step, shared by every layer). */
export interface PrefillBlockPlan {
  T: number; // tokens in the step
  blockSize: number; // BS
  numQBlocks: number;
  /** Largest query block index b of any query block (sizes the selection's workgroup arrays and block lists). */
  maxQBlock: number;
  qBlocks: Uint32Array; // (numQBlocks, 4) [row, firstToken, firstPos, count]
}

/**
 * Groups the step's tokens (tokenSeq / positions per token, as the dense attention takes them) into query blocks.
 * Each run of tokens of one sequence at consecutive positions is cut at block boundaries. The tokens of one
 * (sequence, block) must be adjacent in the step (the engine lays each sequence's chunk out contiguously); any
 * order of sequences is fine. Throws INTERNAL otherwise.
 */
export function planPrefillBlocks(
  tokenSeq: ArrayLike<number>,
  positions: ArrayLike<number>,
  blockSize = 64,
): PrefillBlockPlan {
  const T = tokenSeq.length;
  if (positions.length !== T || !Number.isInteger(blockSize) || blockSize < 1) {
    throw new SiftError(
      'INTERNAL',
      `planPrefillBlocks: ${T} tokenSeq vs ${positions.length} positions, BS ${blockSize}`,
    );
  }
  const entries: number[][] = []; // [row, firstToken, firstPos, count]
  const seen = new Set<string>();
  for (let t = 0; t < T; t++) {
    const row = tokenSeq[t];
    const pos = positions[t];
    const last = entries[entries.length - 1];
    const b = Math.floor(pos / blockSize);
    if (last && last[0] === row && last[2] + last[3] === pos && Math.floor(last[2] / blockSize) === b) {
      last[3]++;
      continue;
    }
    const key = `${row}:${b}`;
    if (seen.has(key)) {
      throw new SiftError(
        'INTERNAL',
        `planPrefillBlocks: tokens of sequence row ${row} in block ${b} are not adjacent at consecutive positions`,
      );
    }
    seen.add(key);
    entries.push([row, t, pos, 1]);
  }
  let maxQBlock = 0;
  const qBlocks = new Uint32Array(entries.length * QBLOCK_WORDS);
  entries.forEach((e, i) => {
    qBlocks.set(e, i * QBLOCK_WORDS);
    maxQBlock = Math.max(maxQBlock, Math.floor(e[2] / blockSize));
  });
  return { T, blockSize, numQBlocks: entries.length, maxQBlock, qBlocks };
}

/** The coarse level of hierarchical block selection: blocks per group (0: flat) and groups kept beyond topBlocks. */
export interface BlockHierarchy {
  groupBlocks: number;
  margin: number;
}

/** The default: groups of 8 blocks (512 tokens), topBlocks + 8 groups' blocks scored. */
export const DEFAULT_BLOCK_HIERARCHY: BlockHierarchy = { groupBlocks: 8, margin: 8 };
/** The flat selection: every earlier block's digest scored. */
export const FLAT_BLOCKS: BlockHierarchy = { groupBlocks: 0, margin: 0 };

/** What one (query block b, sparse KV head) selection reads: coarse digests and block digests. */
export function selectionReads(
  b: number,
  topBlocks: number,
  localBlocks: number,
  h: BlockHierarchy,
): { coarse: number; blocks: number } {
  const candEnd = b > localBlocks + 1 ? b - localBlocks : 1;
  const nG = h.groupBlocks > 0 ? Math.floor(candEnd / h.groupBlocks) : 0;
  const beam = topBlocks + h.margin;
  if (candEnd - 1 <= topBlocks || nG <= beam) return { coarse: 0, blocks: b };
  return { coarse: nG, blocks: b - (nG - beam) * h.groupBlocks };
}

/**
 * Bytes one layer's selection reads for a plan (the benchmark prints it): per (query block, sparse KV head) its
 * queries, the coarse digests it bounds (f16 min / max, 4 * headDim bytes each) and the block digests it scores (f32
 * means, 4 * headDim bytes each; `selectionReads`).
 */
export function selectionBytes(
  plan: PrefillBlockPlan,
  numHeads: number,
  numKvHeads: number,
  headDim: number,
  topBlocks = 0,
  localBlocks = 0,
  h: BlockHierarchy = FLAT_BLOCKS,
): number {
  let bytes = 0;
  for (let i = 0; i < plan.numQBlocks; i++) {
    const b = Math.floor(plan.qBlocks[i * QBLOCK_WORDS + 2] / plan.blockSize);
    const n = plan.qBlocks[i * QBLOCK_WORDS + 3];
    const r = selectionReads(b, topBlocks, localBlocks, h);
    bytes += (n * numHeads + (r.coarse + r.blocks) * numKvHeads) * headDim * 4;
  }
  return bytes;
}

/**
 * Key blocks a (query block, KV head) list keeps for query block `b` (block index of its positions): the causal blocks
 * 0..b when they are few, else the sink block, the diagonal, `localBlocks` before it and the `topBlocks` best others;
 * the kernel writes this count as the list's first word. Block-sparse prefill skips the other b + 1 - kept blocks.
 */
export function keptKeyBlocks(b: number, topBlocks: number, localBlocks: number): number {
  return Math.min(b + 1, topBlocks + localBlocks + 2);
}

/** u32 words per (query block, KV head) list: a count, then at most sink + top + local + diagonal blocks. */
export function blockListStride(plan: PrefillBlockPlan, topBlocks: number, localBlocks: number): number {
  return 1 + Math.min(plan.maxQBlock + 1, topBlocks + localBlocks + 2);
}

/** The per-KV-head mode table as the 64 u32 words of a uniform array<vec4<u32>, 16> (unused heads 0). */
export function modeWords(kernel: string, headModes: readonly number[], numKvHeads: number): number[] {
  check(
    kernel,
    headModes.length === numKvHeads && headModes.every((m) => m === 0 || m === 1 || m === 2),
    `headModes ${JSON.stringify(headModes)} must be ${numKvHeads} of 0/1/2`,
  );
  return Array.from({ length: 4 * 16 }, (_, i) => headModes[i] ?? 0);
}

export interface BlockSelectArgs {
  /** Query heads per q row when the heads used are a prefix of the row (default numHeads). */
  qRowHeads?: number;
  q: Binding; // (T, qRowHeads, headDim) f32, after RoPE
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each logical page
  digests: PoolBinding; // (numPages * bpp, numKvHeads, headDim) f32 block digests (block_digest), this step's written
  qBlocks: Binding; // (numQBlocks, 4) u32 = plan.qBlocks
  blockList: Binding; // (numQBlocks, numKvHeads, listStride) u32 out: [count, blocks ascending...]
  plan: PrefillBlockPlan;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  headModes: readonly number[]; // (numKvHeads) HeadMode; only sparse (1) heads are selected
  topBlocks: number; // best-scoring blocks kept besides sink, diagonal and local
  localBlocks: number; // blocks just before the diagonal always kept
  /** The coarse level (default flat: every earlier block scored); its groups' digests must have been written. */
  hierarchy?: BlockHierarchy;
}

export class BlockSelectKernel {
  constructor(
    private readonly gpu: Gpu,
    /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {}

  /**
   * Compiles every selection pipeline a prefill of up to `maxContext` tokens can use (warm-up): one per 256 key
   * blocks of workgroup memory, up to the largest query block (as far as the device holds). `digests`: the layers'
   * block-digest pools (their slabs specialise the pipelines).
   */
  compileFor(
    maxContext: number,
    headDim: number,
    blockSize = 64,
    digests: PoolBinding[] = [],
    h: BlockHierarchy = FLAT_BLOCKS,
  ): void {
    const need = Math.ceil(Math.ceil(maxContext / blockSize) / 256) * 256;
    const top = Math.min(this.maxKeyBlocks(headDim, h.groupBlocks), need);
    const pools = new Map(
      (digests.length ? digests : [null]).map((d) => [JSON.stringify(slabDefines({ digests: d })), d]),
    );
    for (let maxKb = 256; maxKb <= Math.max(256, top); maxKb += 256) {
      for (const d of pools.values()) {
        this.gpu.pipeline('block_select', this.defines(headDim, maxKb, h.groupBlocks, d), {}, PARAMS);
      }
    }
  }

  /** Largest query block index + 1 the selection can handle on this device for a head dim (and group size). */
  maxKeyBlocks(headDim: number, groupBlocks = 0): number {
    // workgroup memory: keys (MAXKB u32), group flags (MAXKB / G u32), pooled query and its two parts (3 HD f32)
    const perBlock = 4 * (1 + (groupBlocks > 0 ? 1 / groupBlocks : 0));
    return Math.floor((this.gpu.caps.maxComputeWorkgroupStorageSize - 12 * headDim - 16) / perBlock / 256) * 256;
  }

  private defines(headDim: number, maxKb: number, groupBlocks: number, digests: PoolBinding | null) {
    const MAXG = groupBlocks > 0 ? Math.ceil(maxKb / groupBlocks) : 1;
    return { HD: headDim, MAXKB: maxKb, GROUP: groupBlocks, MAXG, ...slabDefines({ digests }) };
  }

  encode(pass: GPUComputePassEncoder, arena: UniformArena, a: BlockSelectArgs): void {
    const K = 'block_select';
    requireHeads(K, a, MAX_KV_HEADS);
    const { plan } = a;
    requireInts(
      K,
      { pageSize: a.pageSize, maxPagesPerSeq: a.maxPagesPerSeq, topBlocks: a.topBlocks, localBlocks: a.localBlocks },
      { pageSize: 1 },
    );
    const h = a.hierarchy ?? FLAT_BLOCKS;
    requireInts(K, { groupBlocks: h.groupBlocks, margin: h.margin });
    check(K, h.groupBlocks !== 1, 'groupBlocks must be 0 (flat) or at least 2');
    const listStride = blockListStride(plan, a.topBlocks, a.localBlocks);
    const maxKb = Math.max(256, Math.ceil((plan.maxQBlock + 1) / 256) * 256);
    const most = this.maxKeyBlocks(a.headDim, h.groupBlocks);
    check(K, maxKb <= most, `query block ${plan.maxQBlock} beyond the ${most} key blocks workgroup memory holds`);
    const hd = a.headDim;
    const bpp = digestSlotsPerPage(a.pageSize, plan.blockSize);
    requireBytes(K, 'digests', a.digests, bpp * 2 * a.numKvHeads * hd * 4, `(slots, 2, ${a.numKvHeads}, ${hd}) words`);
    const qRowHeads = a.qRowHeads ?? a.numHeads;
    requireBytes(K, 'q', a.q, plan.T * qRowHeads * hd * 4, `(${plan.T}, ${qRowHeads}, ${hd}) f32`);
    requireBytes(K, 'qBlocks', a.qBlocks, plan.numQBlocks * QBLOCK_WORDS * 4, `(${plan.numQBlocks}, 4) u32`);
    requireBytes(
      K,
      'blockList',
      a.blockList,
      plan.numQBlocks * a.numKvHeads * listStride * 4,
      `(${plan.numQBlocks}, ${a.numKvHeads}, ${listStride}) u32`,
    );
    const modes = modeWords(K, a.headModes, a.numKvHeads);
    // Lists are only read for sparse heads: a layer without one needs no selection at all.
    if (!a.headModes.some((m) => m === HeadMode.sparse) || plan.numQBlocks === 0) return;
    const u = arena.params(PARAMS, {
      ...pagedHeads(a),
      blockSize: plan.blockSize,
      numQBlocks: plan.numQBlocks,
      topBlocks: a.topBlocks,
      localBlocks: a.localBlocks,
      listStride,
      qRowHeads,
      bpp,
      beam: a.topBlocks + h.margin,
      modes,
    });
    const [x, y] = grid2d(this.gpu, plan.numQBlocks * a.numKvHeads, 1, this.opts.maxWorkgroupsPerDim);
    const pipe = this.gpu.pipeline('block_select', this.defines(hd, maxKb, h.groupBlocks, a.digests), {}, PARAMS);
    this.gpu.dispatch(pass, pipe, [a.q, a.qBlocks, a.blockTable, a.digests, a.blockList, u], x, y);
  }
}
