/** Reference row gather: out[r] = x[rowIds[r]] (zeros for ids past the end). */
export function gatherRowsRef(x: Float32Array, rowIds: ArrayLike<number>, n: number, srcRows: number): Float32Array {
  const out = new Float32Array(rowIds.length * n);
  for (let r = 0; r < rowIds.length; r++) {
    if (rowIds[r] >= srcRows) continue;
    for (let i = 0; i < n; i++) out[r * n + i] = x[rowIds[r] * n + i];
  }
  return out;
}
