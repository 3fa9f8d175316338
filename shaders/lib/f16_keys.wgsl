// Order-preserving 16-bit keys of f16 values packed in pairs (host side: none). Unsigned order of the keys is the
// float order (-0 < +0), so a per-channel min / max is taken on keys and the winner's bits are copied back exactly.

// Both halves of a word of f16 pairs -> order-preserving 16-bit keys.
fn orderKeys(w: u32) -> vec2<u32> {
  let b = vec2<u32>(w & 0xffffu, w >> 16u);
  return select(b | vec2<u32>(0x8000u), (~b) & vec2<u32>(0xffffu), (b & vec2<u32>(0x8000u)) != vec2<u32>(0u));
}

// Inverse of orderKeys for a pair of keys -> the word of f16 pairs.
fn fromKeys(k: vec2<u32>) -> u32 {
  let b = select((~k) & vec2<u32>(0xffffu), k & vec2<u32>(0x7fffu), (k & vec2<u32>(0x8000u)) != vec2<u32>(0u));
  return b.x | (b.y << 16u);
}
