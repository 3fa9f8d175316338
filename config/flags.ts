/** Parsing of numeric command-line flag values, shared by the CLI commands and the benchmark suites. */
import { SiftError } from './errors.js';

export function intFlag(v: unknown, name: string, def: number, min = 0): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (String(v).trim() === '' || !Number.isInteger(n) || n < min)
    throw new SiftError('INVALID_ARGUMENT', `--${name} must be an integer >= ${min} (got ${v})`, { param: name });
  return n;
}

/** A number flag, optionally within [min, max]. */
export function numFlag(v: unknown, name: string, def: number, range: { min?: number; max?: number } = {}): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (String(v).trim() === '' || !Number.isFinite(n))
    throw new SiftError('INVALID_ARGUMENT', `--${name} must be a number (got ${v})`, { param: name });
  const { min = Number.NEGATIVE_INFINITY, max = Number.POSITIVE_INFINITY } = range;
  if (n < min || n > max) {
    const r = `[${Number.isFinite(min) ? min : '-inf'}, ${Number.isFinite(max) ? max : 'inf'}]`;
    throw new SiftError('INVALID_ARGUMENT', `--${name} must be in ${r} (got ${v})`, { param: name });
  }
  return n;
}
