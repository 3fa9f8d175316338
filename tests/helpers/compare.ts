/**
 * Compares GPU output with a reference: |got - want| <= atol + rtol * |want| element-wise.
 * On failure the message reports how many elements fail, the mean absolute error and the worst element with
 * its index, so a kernel bug points at where it is.
 */
import assert from 'node:assert/strict';

export interface Tolerance {
  atol: number;
  rtol: number;
}

export function compareArrays(got: ArrayLike<number>, want: ArrayLike<number>, tol: Tolerance) {
  let fails = 0;
  let worst = -1;
  let worstErr = -1;
  let sumErr = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    const err = Math.abs(g - w);
    const bad = !(err <= tol.atol + tol.rtol * Math.abs(w)); // NaN counts as bad
    if (bad) fails++;
    const e = Number.isNaN(err) ? Number.POSITIVE_INFINITY : err;
    sumErr += Number.isFinite(e) ? e : 0;
    if (e > worstErr) {
      worstErr = e;
      worst = i;
    }
  }
  return { fails, worst, worstErr, meanErr: sumErr / Math.max(1, want.length) };
}

export function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: Tolerance, what = 'output'): void {
  assert.equal(got.length, want.length, `${what}: length ${got.length} != reference ${want.length}`);
  const r = compareArrays(got, want, tol);
  if (r.fails > 0) {
    assert.fail(
      `${what}: ${r.fails}/${want.length} elements outside atol=${tol.atol} rtol=${tol.rtol}; ` +
        `mean |err| ${r.meanErr.toExponential(3)}; worst at [${r.worst}]: got ${got[r.worst]} want ${want[r.worst]} ` +
        `(|err| ${r.worstErr.toExponential(3)})`,
    );
  }
}
