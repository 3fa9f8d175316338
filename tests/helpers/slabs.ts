/**
 * Pools split into slabs for the kernel tests (shaders/lib/slabs.ts): a host array uploaded as `numSlabs` slabs of
 * whole units (pages or slots), so that the split paths run on small shapes, and read back as one array.
 */
import { Slabs } from '../../shaders/lib/slabs.js';
import type { Gpu } from '../../shaders/runtime.js';

/**
 * Uploads `data` (units of `unitBytes` each, back to back) as a pool of about `numSlabs` slabs of whole units
 * (fewer when there are fewer units). Each slab is its own buffer.
 */
export function uploadSlabs(
  gpu: Gpu,
  label: string,
  data: ArrayBufferView,
  unitBytes: number,
  numSlabs: number,
): Slabs {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const units = bytes.byteLength / unitBytes;
  if (!Number.isInteger(units) || units < 1)
    throw new Error(`uploadSlabs: ${bytes.byteLength} bytes not units of ${unitBytes}`);
  const perSlab = Math.ceil(units / Math.max(1, Math.min(numSlabs, units)));
  const slabs: GPUBuffer[] = [];
  for (let at = 0; at < units; at += perSlab) {
    const part = bytes.slice(at * unitBytes, Math.min(units, at + perSlab) * unitBytes);
    slabs.push(gpu.upload(`${label}.${slabs.length}`, part));
  }
  return new Slabs(slabs, perSlab * unitBytes, bytes.byteLength);
}

/** Creates a zero-filled pool of `units` units as about `numSlabs` slabs. */
export function zeroSlabs(gpu: Gpu, label: string, units: number, unitBytes: number, numSlabs: number): Slabs {
  return uploadSlabs(gpu, label, new Uint8Array(units * unitBytes), unitBytes, numSlabs);
}

/** Reads a pool (slabs or one buffer) back as its bytes, slab after slab. */
export async function readPool(gpu: Gpu, pool: Slabs | GPUBuffer): Promise<Uint8Array> {
  if (!(pool instanceof Slabs)) return new Uint8Array(await gpu.read(pool));
  const out = new Uint8Array(pool.bytes);
  let at = 0;
  for (const s of pool.slabs) {
    const buf = 'mapState' in s ? s : s.buffer;
    const n = Math.min(buf.size, pool.bytes - at);
    out.set(new Uint8Array(await gpu.read(buf, 0, n)), at);
    at += n;
  }
  return out;
}

/** The pool as `data`: one plain buffer when numSlabs <= 1, else about numSlabs slabs of whole units. */
export function poolOf(
  gpu: Gpu,
  label: string,
  data: ArrayBufferView,
  unitBytes: number,
  numSlabs: number,
): Slabs | GPUBuffer {
  return numSlabs <= 1 ? gpu.upload(label, data) : uploadSlabs(gpu, label, data, unitBytes, numSlabs);
}

/** Writes `data` over a pool (slabs or one buffer) from its start, slab after slab. */
export function writePool(gpu: Gpu, pool: Slabs | GPUBuffer, data: ArrayBufferView): void {
  if (!(pool instanceof Slabs)) {
    gpu.write(pool, data);
    return;
  }
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let s = 0, at = 0; s < pool.numSlabs && at < bytes.byteLength; s++, at += pool.slabBytes) {
    const slab = pool.slabs[s];
    gpu.write(
      'mapState' in slab ? slab : slab.buffer,
      bytes.subarray(at, Math.min(bytes.byteLength, at + pool.slabBytes)),
    );
  }
}
