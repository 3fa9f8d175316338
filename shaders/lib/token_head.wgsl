// One workgroup per (query token, local query head) on a 2-D grid (lib/grid.wgsl): flat index (t - first) * nHeads
// + h over p.tokens tokens from token `first` on. The including shader provides uniforms p.tokens, p.nHeads and
// p.group (query heads per KV head).
//#include lib/grid

struct TokenHead {
  valid: bool,  // false past the last (token, head): the workgroup returns (workgroup-uniform)
  t: u32,       // query token (batch row)
  h: u32,       // local query head
  kvh: u32,     // its KV head, h / group
}

fn tokenHeadOf(grid: Grid, first: u32) -> TokenHead {
  let th = workgroupIndex(grid);
  if (th >= p.tokens * p.nHeads) { return TokenHead(false, 0u, 0u, 0u); }
  let tl = th / p.nHeads;
  let h = th - tl * p.nHeads;
  return TokenHead(true, first + tl, h, h / p.group);
}
