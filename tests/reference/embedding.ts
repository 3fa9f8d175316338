/** Reference embedding gather: out (T, hidden) = table (vocab, hidden)[ids[t]], zeros for ids >= vocab. */
export function embeddingRef(ids: Uint32Array, table: Float32Array, vocab: number, hidden: number): Float32Array {
  const T = ids.length;
  const out = new Float32Array(T * hidden);
  for (let t = 0; t < T; t++) {
    const id = ids[t];
    if (id < vocab) out.set(table.subarray(id * hidden, (id + 1) * hidden), t * hidden);
  }
  return out;
}
