// Shared by block_digest.wgsl and block_group.wgsl, which both walk the host's list of key blocks a step wrote
// (entries: (E, 3) u32 = block-table row, key block c, valid tokens) with one thread per (entry, KV head, channel
// pair): their uniforms, the thread's coordinates and a block's digest slot. The including shader provides const HW,
// entries: array<u32>, blockTable: array<u32> and the uniform p of this struct.
//#include lib/block_table

struct Params {
  numEntries: u32,      // E
  nKvHeads: u32,        // KV heads
  pageSize: u32,        // tokens per physical page
  maxPagesPerSeq: u32,  // block table row length
  blockSize: u32,       // BS: tokens per key block
  bpp: u32,             // digest slots per physical page: max(1, pageSize / BS)
  _p0: u32,
  _p1: u32,
}

// Thread idx's entry e (its row, key block c and valid tokens n), KV head h and channel pair w.
struct EntryThread {
  row: u32,
  c: u32,
  n: u32,
  h: u32,
  w: u32,
}

// Threads of the dispatch with work: numEntries * nKvHeads * HW.
fn entryThreads() -> u32 {
  return p.numEntries * p.nKvHeads * HW;
}

fn entryThread(idx: u32) -> EntryThread {
  let e = idx / (p.nKvHeads * HW);
  let hw = idx - e * p.nKvHeads * HW;
  let h = hw / HW;
  return EntryThread(entries[e * 3u], entries[e * 3u + 1u], entries[e * 3u + 2u], h, hw - h * HW);
}

// Digest slot of key block c of block-table row row: it lives with the physical page of the block's first token.
fn blockSlot(row: u32, c: u32) -> u32 {
  let j0 = c * p.blockSize;
  return blockPage(row, j0 / p.pageSize) * p.bpp + (j0 % p.pageSize) / p.blockSize;
}
