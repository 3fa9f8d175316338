/**
 * Dispatch math shared by the kernels (host side of shaders/lib/grid.wgsl): `count` work items in workgroups of
 * `wg` threads (wg = 1: one workgroup per item), laid out as a 2-D grid when one dimension would exceed the adapter's
 * limit. `maxPerDim` lets tests force the 2-D layout with small inputs.
 * WGSL side: `let idx = threadIndex(inv, WG);` (or `workgroupIndex(inv)`) then `if (idx >= count) { return; }`.
 */
import type { Gpu } from '../runtime.js';

export function grid2d(gpu: Gpu, count: number, wg: number, maxPerDim?: number): [x: number, y: number] {
  const groups = Math.ceil(count / wg);
  const max = Math.min(maxPerDim ?? Number.POSITIVE_INFINITY, gpu.caps.maxComputeWorkgroupsPerDimension);
  if (groups <= max) return [groups, 1];
  return [max, Math.ceil(groups / max)];
}
