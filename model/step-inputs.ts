/**
 * The per-step inputs of the forward pass in ONE device buffer: named regions of u32 words (token ids, positions,
 * sparse-decode rows, indirect dispatch arguments, sampling specs and biases, ...), each at a 256-byte aligned
 * offset so kernels bind it as a range. A step fills the regions it uses in the host mirror (`words`), and `flush`
 * uploads the span they cover with one writeBuffer. Regions are ordered so a decode step's all sit at the front:
 * its upload is a few hundred bytes to a few KB in one call.
 *
 * The buffer is also INDIRECT: the dispatch-argument regions are grids of dispatches captured as indirect; since the
 * host wrote them, the runtime dispatches those directly from the mirror (Gpu.registerHostArgs), and the kernels
 * that need a count of this step (the split count of sparse decode's reduce) read it from the same words.
 */
import { SiftError } from '../config/errors.js';
import { type BufferRange, BufferUsage, type Gpu } from '../shaders/runtime.js';

/** Word alignment of a region: 256 bytes, the storage-binding offset alignment WebGPU guarantees. */
const ALIGN_WORDS = 64;

export class StepInputs {
  readonly buffer: GPUBuffer;
  private readonly host: Uint32Array;
  private readonly regions = new Map<string, { offset: number; words: number }>();
  private lo = Number.POSITIVE_INFINITY;
  private hi = 0;

  /** `layout`: regions in buffer order, [name, capacity in u32 words]. */
  constructor(
    private readonly gpu: Gpu,
    layout: readonly (readonly [string, number])[],
  ) {
    let offset = 0;
    const align = Math.max(ALIGN_WORDS, gpu.caps.minStorageBufferOffsetAlignment / 4);
    for (const [name, words] of layout) {
      if (!Number.isInteger(words) || words < 0)
        throw new SiftError('INTERNAL', `step inputs: region ${name} of ${words} words`);
      this.regions.set(name, { offset, words });
      offset += Math.ceil(Math.max(1, words) / align) * align;
    }
    this.host = new Uint32Array(offset);
    const { STORAGE, COPY_DST, INDIRECT } = BufferUsage;
    this.buffer = gpu.createBuffer('step-inputs', offset * 4, STORAGE | COPY_DST | INDIRECT);
    // the host wrote every grid in here: dispatch them directly (Dawn's indirect validation is costly on the host)
    gpu.registerHostArgs(this.buffer, (byteOffset) => {
      const w = byteOffset / 4;
      return [this.host[w], this.host[w + 1], this.host[w + 2]];
    });
  }

  private region(name: string): { offset: number; words: number } {
    const r = this.regions.get(name);
    if (!r) throw new SiftError('INTERNAL', `step inputs: no region ${name}`);
    return r;
  }

  /** The first `words` words of region `name` in the host mirror, marked for the next flush (fill them). */
  words(name: string, words: number): Uint32Array {
    const r = this.region(name);
    if (words > r.words) throw new SiftError('INTERNAL', `step inputs: ${words} words > region ${name} of ${r.words}`);
    if (words > 0) {
      this.lo = Math.min(this.lo, r.offset);
      this.hi = Math.max(this.hi, r.offset + words);
    }
    return this.host.subarray(r.offset, r.offset + words);
  }

  /** The whole region in the host mirror, not marked (fill it, then `mark` what the step uses). */
  view(name: string): Uint32Array {
    const r = this.region(name);
    return this.host.subarray(r.offset, r.offset + r.words);
  }

  /** Marks the first `words` words of region `name` for the next flush. */
  mark(name: string, words: number): void {
    this.words(name, words);
  }

  /** Float view of the same words (f32 fields of a region). */
  floats(name: string, words: number): Float32Array {
    const u = this.words(name, words);
    return new Float32Array(u.buffer, u.byteOffset, u.length);
  }

  /** The whole region as a binding range. */
  binding(name: string): BufferRange {
    const r = this.region(name);
    return { buffer: this.buffer, offset: r.offset * 4, size: Math.max(1, r.words) * 4 };
  }

  /** Byte offset of word `word` of region `name` (indirect dispatch arguments). */
  byteOffset(name: string, word = 0): number {
    return (this.region(name).offset + word) * 4;
  }

  /** Capacity of region `name` in words. */
  capacity(name: string): number {
    return this.region(name).words;
  }

  /** Uploads the span of every region written since the last flush: one writeBuffer (none when nothing changed). */
  flush(): void {
    if (this.hi > this.lo) {
      const bytes = new Uint8Array(this.host.buffer, this.lo * 4, (this.hi - this.lo) * 4);
      this.gpu.writeRaw(this.buffer, this.lo * 4, bytes, 0, bytes.byteLength);
    }
    this.lo = Number.POSITIVE_INFINITY;
    this.hi = 0;
  }

  destroy(): void {
    this.gpu.unregisterHostArgs(this.buffer);
    this.buffer.destroy();
  }
}

/**
 * A device copy of a host array kept in sync by its differences: `update` compares the new contents with the
 * mirror and uploads the one span that changed (block tables change by a page every pageSize decode steps).
 */
export class MirroredBuffer {
  readonly buffer: GPUBuffer;
  private readonly mirror: Uint32Array;

  constructor(
    private readonly gpu: Gpu,
    label: string,
    words: number,
  ) {
    this.mirror = new Uint32Array(Math.max(4, words));
    this.buffer = gpu.createBuffer(label, this.mirror.byteLength);
  }

  /** Sets words [0, data.length) to `data`, uploading only the span that differs. */
  update(data: Uint32Array): void {
    if (data.length > this.mirror.length) {
      throw new SiftError('INTERNAL', `mirrored buffer: ${data.length} words > ${this.mirror.length}`);
    }
    const m = this.mirror;
    let lo = 0;
    while (lo < data.length && m[lo] === data[lo]) lo++;
    if (lo === data.length) return;
    let hi = data.length;
    while (hi > lo && m[hi - 1] === data[hi - 1]) hi--;
    m.set(data.subarray(lo, hi), lo);
    this.gpu.writeRaw(this.buffer, lo * 4, new Uint8Array(m.buffer, lo * 4, (hi - lo) * 4), 0, (hi - lo) * 4);
  }

  destroy(): void {
    this.buffer.destroy();
  }
}
