// Paged KV cache addressing (host side: shaders/lib/paged.ts). One layer's cache is (numPages, pageSize, nKvHeads,
// HW) u32 words of f16 pairs. The including shader provides const HW and uniforms p.pageSize and p.nKvHeads.

// Word offset of (physical page, slot in the page, KV head) in the cache.
fn slotWord(page: u32, slot: u32, kvh: u32) -> u32 {
  return ((page * p.pageSize + slot) * p.nKvHeads + kvh) * HW;
}
