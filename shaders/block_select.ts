/**
 * Block selection for block-sparse prefill (MInference's dynamic block sparsity): for a prefill chunk, mean-pool the
 * queries of each 64-token query block and the keys of each 64-token key block of the causal context (read through
 * the block table from the packed-f16 cache), score key blocks by pooled q . pooled k (GQA: the query head's KV
 * head), and keep per (query block, query head): the sink block 0, the diagonal block, the `localBlocks` blocks
 * just before it, and the `topBlocks` best-scoring other causal blocks.
 *
 * Blocks are aligned to absolute positions: query / key block b covers positions [b*BS, b*BS + BS). A query block of
 * a chunk holds the chunk's tokens inside that span (a partial block at a chunk edge pools only those tokens).
 *
 * Host plan (`planPrefillBlocks`, once per step, shared by every layer):
 *   qBlocks (numQBlocks, 5) u32: [block-table row, firstToken, firstPos, count, kPoolBase] - tokens firstToken ..
 *     firstToken+count-1 of the step, at positions firstPos.., all in block firstPos / BS; kPoolBase is the row of
 *     kPool holding that sequence's key block 0.
 *   kBlocks (numKBlocks, 2) u32: [block-table row, key block c] for every full key block c < the sequence's last
 *     query block (the only key blocks a selection scores).
 * Scratch: kPool (numKBlocks, numKvHeads, headDim) f32; blockList (numQBlocks, numHeads, listStride) u32.
 */
import { SiftError } from '../config/errors.js';
import { PAGED_HEADS, pagedHeads } from './lib/attention.js';
import { check, MAX_KV_HEADS, requireBytes, requireHeads, requireInts } from './lib/checks.js';
import { grid2d } from './lib/grid.js';
import { defineParams } from './lib/params.js';
import type { Binding, Gpu, UniformArena } from './runtime.js';

/** u32 words per qBlocks entry. */
export const QBLOCK_WORDS = 5;
/** u32 words per kBlocks entry. */
export const KBLOCK_WORDS = 2;
/** struct Params of block_select.wgsl (both entry variants). */
const PARAMS = defineParams('block_select', {
  ...PAGED_HEADS,
  blockSize: 'u32',
  count: 'u32',
  topBlocks: 'u32',
  localBlocks: 'u32',
  listStride: 'u32',
  qRowHeads: 'u32',
  modes: 'array<vec4<u32>, 16>',
});

/** Per-KV-head attention kind for prefill. */
export const HeadMode = { dense: 0, sparse: 1, lambda: 2 } as const;
export type HeadModeValue = (typeof HeadMode)[keyof typeof HeadMode];

/** The query and key blocks of one prefill step (host side; upload qBlocks and kBlocks once per step). */
export interface PrefillBlockPlan {
  T: number; // tokens in the step
  blockSize: number; // BS
  numQBlocks: number;
  numKBlocks: number;
  /** Largest query block index b of any query block (sizes the selection's workgroup arrays and block lists). */
  maxQBlock: number;
  qBlocks: Uint32Array; // (numQBlocks, 5) [row, firstToken, firstPos, count, kPoolBase]
  kBlocks: Uint32Array; // (numKBlocks, 2) [row, key block]
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
  const lastBlock = new Map<number, number>(); // row -> largest query block
  for (const [row, , pos] of entries) {
    lastBlock.set(row, Math.max(lastBlock.get(row) ?? 0, Math.floor(pos / blockSize)));
  }
  const kBase = new Map<number, number>();
  const kb: number[] = [];
  for (const [row, bMax] of lastBlock) {
    kBase.set(row, kb.length / KBLOCK_WORDS);
    for (let c = 0; c < bMax; c++) kb.push(row, c);
  }
  const qBlocks = new Uint32Array(entries.length * QBLOCK_WORDS);
  entries.forEach((e, i) => {
    qBlocks.set([...e, kBase.get(e[0]) ?? 0], i * QBLOCK_WORDS);
  });
  return {
    T,
    blockSize,
    numQBlocks: entries.length,
    numKBlocks: kb.length / KBLOCK_WORDS,
    maxQBlock: Math.max(0, ...lastBlock.values()),
    qBlocks,
    kBlocks: Uint32Array.from(kb),
  };
}

/**
 * Key blocks a (query block, head) list keeps for query block `b` (block index of its positions): the causal blocks
 * 0..b when they are few, else the sink block, the diagonal, `localBlocks` before it and the `topBlocks` best others;
 * the kernel writes this count as the list's first word. Block-sparse prefill skips the other b + 1 - kept blocks.
 */
export function keptKeyBlocks(b: number, topBlocks: number, localBlocks: number): number {
  return Math.min(b + 1, topBlocks + localBlocks + 2);
}

/** u32 words per (query block, head) list: a count, then at most sink + top + local + diagonal blocks. */
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
  /** Query heads per q/out row when the heads used are a prefix of the row (default numHeads). */
  qRowHeads?: number;
  q: Binding; // (T, numHeads, headDim) f32, after RoPE
  kCache: Binding; // (numPages, pageSize, numKvHeads, headDim / 2) u32 packed f16 pairs, chunk already written
  blockTable: Binding; // (numSeqs, maxPagesPerSeq) u32 physical page of each logical page
  qBlocks: Binding; // (numQBlocks, 5) u32 = plan.qBlocks
  kBlocks: Binding; // (numKBlocks, 2) u32 = plan.kBlocks
  kPool: Binding; // (numKBlocks, numKvHeads, headDim) f32 scratch
  blockList: Binding; // (numQBlocks, numHeads, listStride) u32 out: [count, blocks ascending...]
  plan: PrefillBlockPlan;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  maxPagesPerSeq: number;
  headModes: readonly number[]; // (numKvHeads) HeadMode; only sparse (1) heads are selected
  topBlocks: number; // best-scoring blocks kept besides sink, diagonal and local
  localBlocks: number; // blocks just before the diagonal always kept
}

export class BlockSelectKernel {
  constructor(
    private readonly gpu: Gpu,
    /** `maxWorkgroupsPerDim` (tests only) caps the grid's x dimension to exercise the 2-D layout. */
    private readonly opts: { maxWorkgroupsPerDim?: number } = {},
  ) {}

  /**
   * Compiles every pipeline a prefill of up to `maxContext` tokens can use (warm-up): the key pooling and one
   * selection pipeline per 256 key blocks of workgroup memory up to the largest query block.
   */
  compileFor(maxContext: number, headDim: number, blockSize = 64): void {
    this.gpu.pipeline('block_select', { HD: headDim, POOL_K: true }, {}, PARAMS);
    const top = Math.min(this.maxKeyBlocks(headDim), Math.ceil(Math.ceil(maxContext / blockSize) / 256) * 256);
    for (let maxKb = 256; maxKb <= Math.max(256, top); maxKb += 256) {
      this.gpu.pipeline('block_select', { HD: headDim, MAXKB: maxKb }, {}, PARAMS);
    }
  }

  /** Largest query block index + 1 the selection can handle on this device for a head dim. */
  maxKeyBlocks(headDim: number): number {
    return Math.floor((this.gpu.caps.maxComputeWorkgroupStorageSize - 4 * headDim) / 8 / 256) * 256;
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
    const listStride = blockListStride(plan, a.topBlocks, a.localBlocks);
    const maxKb = Math.max(256, Math.ceil((plan.maxQBlock + 1) / 256) * 256);
    check(
      K,
      maxKb <= this.maxKeyBlocks(a.headDim),
      `query block ${plan.maxQBlock} beyond the ${this.maxKeyBlocks(a.headDim)} key blocks workgroup memory holds`,
    );
    const hd = a.headDim;
    requireBytes(
      K,
      'kCache',
      a.kCache,
      a.pageSize * a.numKvHeads * hd * 2,
      `a page of (${a.pageSize}, ${a.numKvHeads}, ${hd}) f16`,
    );
    requireBytes(K, 'q', a.q, plan.T * a.numHeads * hd * 4, `(${plan.T}, ${a.numHeads}, ${hd}) f32`);
    requireBytes(K, 'qBlocks', a.qBlocks, plan.numQBlocks * QBLOCK_WORDS * 4, `(${plan.numQBlocks}, 5) u32`);
    requireBytes(K, 'kBlocks', a.kBlocks, plan.numKBlocks * KBLOCK_WORDS * 4, `(${plan.numKBlocks}, 2) u32`);
    requireBytes(
      K,
      'kPool',
      a.kPool,
      plan.numKBlocks * a.numKvHeads * hd * 4,
      `(${plan.numKBlocks}, ${a.numKvHeads}, ${hd}) f32`,
    );
    requireBytes(
      K,
      'blockList',
      a.blockList,
      plan.numQBlocks * a.numHeads * listStride * 4,
      `(${plan.numQBlocks}, ${a.numHeads}, ${listStride}) u32`,
    );
    const modes = modeWords(K, a.headModes, a.numKvHeads);
    const params = (count: number) =>
      arena.params(PARAMS, {
        ...pagedHeads(a),
        blockSize: plan.blockSize,
        count,
        topBlocks: a.topBlocks,
        localBlocks: a.localBlocks,
        listStride,
        qRowHeads: a.qRowHeads ?? a.numHeads,
        modes,
      });
    // Lists are only read for sparse heads: a layer without one needs no selection at all.
    if (!a.headModes.some((m) => m === HeadMode.sparse)) return;
    if (plan.numKBlocks > 0) {
      const [x, y] = grid2d(this.gpu, plan.numKBlocks * a.numKvHeads, 1, this.opts.maxWorkgroupsPerDim);
      const pipe = this.gpu.pipeline('block_select', { HD: hd, POOL_K: true }, {}, PARAMS);
      this.gpu.dispatch(pass, pipe, [a.kCache, a.blockTable, a.kBlocks, a.kPool, params(plan.numKBlocks)], x, y);
    }
    const [x, y] = grid2d(this.gpu, plan.numQBlocks * a.numHeads, 1, this.opts.maxWorkgroupsPerDim);
    const pipe = this.gpu.pipeline('block_select', { HD: hd, MAXKB: maxKb }, {}, PARAMS);
    this.gpu.dispatch(pass, pipe, [a.q, a.qBlocks, a.kPool, a.blockList, params(plan.numQBlocks)], x, y);
  }
}
