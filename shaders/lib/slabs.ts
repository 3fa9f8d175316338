/**
 * Pools that span several buffers and bindings. A KV pool (pages), its digests (pages) or the digest hierarchy
 * (sequence slots) can outgrow one binding: maxStorageBufferBindingSize is 128 MiB on lavapipe and 2 GiB on an H100,
 * and one layer's K of stories15M at 1M tokens is 576 MiB. Such a pool is split into slabs of whole units (a unit
 * is a page or a slot), each its own buffer within the limit; every slab but the last holds `unitsPerSlab` units.
 *
 * A kernel binds all slabs of the pool: slab 0 at the binding its shader declares, slab s >= 1 at binding
 * slabBinding(b, s) (Gpu.bindGroup expands a Slabs value in place). The shader declares slab 0 as an ordinary
 * array and names it to the preprocessor with `//#slabs NAME` on the next line (shaders/lib/wgsl.ts), which emits the
 * other slabs' declarations and
 *   fn NAMELoad(i: u32) -> T      element i of the whole pool (slab i / slabElems, element i % slabElems)
 *   fn NAMEStore(i: u32, v: T)    (read_write bindings)
 * so a kernel indexes the pool as if it were one array, in elements over the whole pool (u32: < 2^32 elements, 16
 * GiB of u32 words per pool; createSlabs checks it). A pool of one slab compiles to plain indexing (NAME[i]): the
 * generated code only differs from a single binding when the pool really spans several. Slabs hold whole units, so
 * a page (or a head's row of it) never straddles two slabs; kernels may still address element by element.
 *
 * What bounds a pool then is memory and the binding count: a kernel binds its other buffers plus every slab of each
 * pool it touches, at most maxStorageBuffersPerShaderStage (16 on lavapipe and on the H100) storage buffers. Gpu
 * refuses a pipeline over that count (GPU_LIMIT, naming the pools' slabs), and warm-up compiles every pipeline, so a
 * configuration that cannot fit is refused at startup.
 */
import { SiftError } from '../../config/errors.js';
import type { Binding, BufferRange, Gpu } from '../runtime.js';
import { U32_LIMIT } from './checks.js';

/** Binding numbers of extra slabs: slab s >= 1 of the pool bound at b goes to SLAB_BINDING_BASE + b * MAX_SLABS + s. */
export const SLAB_BINDING_BASE = 100;
/** Most slabs one pool may have (more than any adapter's storage bindings per stage would let a kernel bind). */
export const MAX_SLABS = 32;

/** The binding number of slab s (>= 1) of the pool whose slab 0 a shader declares at binding b. */
export function slabBinding(b: number, s: number): number {
  return SLAB_BINDING_BASE + b * MAX_SLABS + s;
}

/** How a pool of `units` units of `unitBytes` splits within `limitBytes` per binding. */
export interface SlabPlan {
  unitBytes: number;
  units: number;
  /** Units in every slab but the last (which holds the rest). */
  unitsPerSlab: number;
  numSlabs: number;
  /** Bytes of a full slab: unitsPerSlab * unitBytes. */
  slabBytes: number;
}

/** Splits `units` units of `unitBytes` into slabs of whole units within `limitBytes` each (at least one unit). */
export function planSlabs(unitBytes: number, units: number, limitBytes: number): SlabPlan {
  if (!Number.isInteger(unitBytes) || unitBytes < 4 || unitBytes % 4 !== 0 || !Number.isInteger(units) || units < 1) {
    throw new SiftError('INTERNAL', `slabs: bad unit ${unitBytes} bytes x ${units}`);
  }
  const unitsPerSlab = Math.min(units, Math.floor(limitBytes / unitBytes));
  if (unitsPerSlab < 1) {
    throw new SiftError(
      'GPU_LIMIT',
      `one unit of ${unitBytes} bytes (a KV page or a sequence's digest levels) exceeds the binding limit ${limitBytes}`,
    );
  }
  const numSlabs = Math.ceil(units / unitsPerSlab);
  return { unitBytes, units, unitsPerSlab, numSlabs, slabBytes: unitsPerSlab * unitBytes };
}

/**
 * A pool split into slabs: `slabs[s]` holds units [s * unitsPerSlab, ...); element i of the pool (of whatever type
 * the shader declares) is in slab floor(i * elemBytes / slabBytes).
 */
export class Slabs {
  constructor(
    readonly slabs: readonly Binding[],
    /** Bytes of every slab but the last (a multiple of the shader's element size). */
    readonly slabBytes: number,
    /** Bytes of the pool: the sum over its slabs. */
    readonly bytes: number,
  ) {
    if (slabs.length < 1 || slabs.length > MAX_SLABS) {
      throw new SiftError('INTERNAL', `slabs: ${slabs.length} slabs (1..${MAX_SLABS})`);
    }
  }

  get numSlabs(): number {
    return this.slabs.length;
  }

  /** A pool of one buffer (or range). */
  static of(b: Binding): Slabs {
    const bytes = plainBytes(b);
    return new Slabs([b], bytes, bytes);
  }

  /** Destroys the slabs' buffers. */
  destroy(): void {
    for (const s of this.slabs) ('mapState' in s ? s : s.buffer).destroy();
  }
}

/**
 * Encodes a copy of `bytes` bytes (a multiple of 4) of a pool from byte `src` to byte `dst`, both counted over the
 * whole pool: split at slab boundaries, one copyBufferToBuffer per piece; a piece within one buffer (WebGPU copies
 * between distinct buffers only) goes through `scratch` (COPY_SRC | COPY_DST), a chunk at a time. The ranges must not
 * overlap.
 */
export function encodePoolCopy(
  enc: GPUCommandEncoder,
  pool: Slabs,
  src: number,
  dst: number,
  bytes: number,
  scratch: GPUBuffer,
): void {
  if (src % 4 || dst % 4 || bytes % 4 || src < 0 || dst < 0 || src + bytes > pool.bytes || dst + bytes > pool.bytes) {
    throw new SiftError('INTERNAL', `pool copy of ${bytes} bytes from ${src} to ${dst} over a pool of ${pool.bytes}`);
  }
  if (src < dst + bytes && dst < src + bytes) throw new SiftError('INTERNAL', 'pool copy: overlapping ranges');
  const at = (i: number) => {
    const s = Math.floor(i / pool.slabBytes);
    const b = pool.slabs[s];
    return {
      buffer: 'mapState' in b ? b : b.buffer,
      offset: ('mapState' in b ? 0 : ((b as BufferRange).offset ?? 0)) + (i - s * pool.slabBytes),
      left: pool.slabBytes - (i - s * pool.slabBytes),
    };
  };
  const chunk = Math.floor(scratch.size / 4) * 4;
  for (let done = 0; done < bytes; ) {
    const a = at(src + done);
    const b = at(dst + done);
    let n = Math.min(bytes - done, a.left, b.left);
    if (a.buffer === b.buffer) {
      n = Math.min(n, chunk);
      enc.copyBufferToBuffer(a.buffer, a.offset, scratch, 0, n);
      enc.copyBufferToBuffer(scratch, 0, b.buffer, b.offset, n);
    } else {
      enc.copyBufferToBuffer(a.buffer, a.offset, b.buffer, b.offset, n);
    }
    done += n;
  }
}

/** Runs of consecutive (src, dst) units: [src, dst, count][], so a copy of many pages is a few large copies. */
export function unitRuns(src: readonly number[], dst: readonly number[]): [number, number, number][] {
  const runs: [number, number, number][] = [];
  src.forEach((s, i) => {
    const last = runs[runs.length - 1];
    if (last && s === last[0] + last[2] && dst[i] === last[1] + last[2]) last[2]++;
    else runs.push([s, dst[i], 1]);
  });
  return runs;
}

/** A kernel's binding of a pool: one buffer / range, or a pool split into slabs. */
export type PoolBinding = Binding | Slabs;

function plainBytes(b: Binding): number {
  if ('mapState' in b) return b.size;
  return b.size ?? b.buffer.size - ((b as BufferRange).offset ?? 0);
}

/** Bytes of a pool binding: the sum over its slabs. */
export function poolBytes(b: PoolBinding): number {
  return b instanceof Slabs ? b.bytes : plainBytes(b);
}

/**
 * Creates a pool of `plan.units` units as slabs (each at least 16 bytes), labelled `label.s`. Throws unless the pool's
 * u32 words can be indexed with u32 (the kernels address it element by element).
 */
export function createSlabs(gpu: Gpu, label: string, plan: SlabPlan): Slabs {
  const bytes = plan.units * plan.unitBytes;
  if (bytes / 4 >= U32_LIMIT) {
    throw new SiftError(
      'GPU_LIMIT',
      `${label}: a pool of ${bytes} bytes exceeds what a kernel addresses with u32 words (16 GiB); use fewer pages`,
    );
  }
  const slabs: GPUBuffer[] = [];
  for (let s = 0; s < plan.numSlabs; s++) {
    const units = Math.min(plan.unitsPerSlab, plan.units - s * plan.unitsPerSlab);
    slabs.push(gpu.createBuffer(plan.numSlabs > 1 ? `${label}.${s}` : label, units * plan.unitBytes));
  }
  return new Slabs(slabs, plan.slabBytes, bytes);
}

/**
 * The preprocessor defines of the pools a kernel binds (name = the shader's binding name): SLABS_<name> and
 * SLAB_BYTES_<name> for each pool of more than one slab; nothing for one buffer (the shader's plain path, and the
 * same pipeline as before pools could split).
 */
export function slabDefines(pools: Record<string, PoolBinding | null | undefined>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [name, b] of Object.entries(pools)) {
    if (b instanceof Slabs && b.numSlabs > 1) {
      d[`SLABS_${name}`] = b.numSlabs;
      d[`SLAB_BYTES_${name}`] = b.slabBytes;
    }
  }
  return d;
}
