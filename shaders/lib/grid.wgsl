// Workgroup grids (host side: shaders/lib/grid.ts). Work too large for one grid dimension is laid out on a 2-D grid
// of workgroups; these give the flat index back.

// The workgroup's place in the grid, an entry-point input: `fn main(grid: Grid, @builtin(local_invocation_index)
// lid: u32)`. Workgroup-uniform (it holds no per-invocation builtin), so barriers may follow a return decided on it.
struct Grid {
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
}

// Flat workgroup index (one workgroup per work item: a (token, head), a key block, ...).
fn workgroupIndex(g: Grid) -> u32 {
  return g.wid.y * g.nwg.x + g.wid.x;
}

// Flat invocation index for one thread per work item, in workgroups of `wg` threads.
fn threadIndex(g: Grid, lid: u32, wg: u32) -> u32 {
  return workgroupIndex(g) * wg + lid;
}
