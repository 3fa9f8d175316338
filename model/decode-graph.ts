/**
 * Decode steps captured once and replayed: for each decode batch size D (1..maxSeqs) and for steps with and
 * without page selection, the forward pass's dispatches (pipelines, bind groups, uniforms) are recorded the first
 * time (at warm-up: `captureAll`) and replayed every later step with no bind group, pipeline or uniform created or
 * written. What varies per step (token ids, positions, sparse rows, the grids of page scoring and attention,
 * sampling specs) comes from the step's inputs (model/step-inputs.ts) and the block table, written before the
 * submit; the captured dispatches read it there.
 */
import type { CapturedPass, Gpu, UniformArena } from '../shaders/runtime.js';

/** Encodes one decode step of D rows (with page selection when `reselect`) into a pass being captured. */
export type DecodeStepEncoder = (
  pass: GPUComputePassEncoder,
  arena: UniformArena,
  D: number,
  reselect: boolean,
) => void;

export class DecodeGraphs {
  private readonly graphs = new Map<number, CapturedPass>();

  constructor(
    private readonly gpu: Gpu,
    private readonly maxRows: number,
    private readonly encodeStep: DecodeStepEncoder,
    /** Whether the model selects pages at all (else one graph per D). */
    private readonly selects: boolean,
  ) {}

  private key(D: number, reselect: boolean): number {
    return D * 2 + (reselect && this.selects ? 1 : 0);
  }

  /** The captured step for D rows (captured now if this is its first use). */
  get(D: number, reselect: boolean): CapturedPass {
    const k = this.key(D, reselect);
    let g = this.graphs.get(k);
    if (!g) {
      g = this.gpu.capture((pass, arena) => this.encodeStep(pass, arena, D, reselect && this.selects));
      this.graphs.set(k, g);
    }
    return g;
  }

  /** Captures every batch size's steps (warm-up: compiles every pipeline a decode step can use). */
  captureAll(): void {
    for (let D = 1; D <= this.maxRows; D++) {
      this.get(D, false);
      if (this.selects) this.get(D, true);
    }
  }

  /** Drops every capture (their bind groups refer to buffers about to be replaced). */
  clear(): void {
    for (const g of this.graphs.values()) g.destroy();
    this.graphs.clear();
  }

  get size(): number {
    return this.graphs.size;
  }
}
