// Paged KV cache addressing through a block table (numSeqs, maxPagesPerSeq) of physical pages, vLLM's layout.
// The including shader provides what lib/paged.wgsl needs plus blockTable: array<u32> and p.maxPagesPerSeq.
//#include lib/paged

// Physical page of page column col of block-table row row.
fn blockPage(row: u32, col: u32) -> u32 {
  return blockTable[row * p.maxPagesPerSeq + col];
}

// Word offset of (position j of block-table row row, KV head kvh) in the cache.
fn kvWord(row: u32, j: u32, kvh: u32) -> u32 {
  return slotWord(blockPage(row, j / p.pageSize), j % p.pageSize, kvh);
}
