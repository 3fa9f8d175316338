/**
 * Dispatch math shared by the element-wise kernels (rope, swiglu, residual_add, kv_write): `count` work items in
 * workgroups of `wg` threads, laid out as a 2-D grid when one dimension would exceed the adapter's limit.
 * `maxPerDim` lets tests force the 2-D layout with small inputs.
 * WGSL side: `let idx = (wid.y * nwg.x + wid.x) * WG + lid;` then `if (idx >= count) { return; }`.
 */
import type { Gpu } from './runtime.js';

export function grid2d(gpu: Gpu, count: number, wg: number, maxPerDim?: number): [x: number, y: number] {
  const groups = Math.ceil(count / wg);
  const max = Math.min(maxPerDim ?? Number.POSITIVE_INFINITY, gpu.caps.maxComputeWorkgroupsPerDimension);
  if (groups <= max) return [groups, 1];
  return [max, Math.ceil(groups / max)];
}
