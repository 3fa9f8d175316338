/** Parsing of numeric command-line flag values, shared by the CLI commands and the benchmark suites. */
import { SiftError } from './errors.js';

export function intFlag(v: unknown, name: string, def: number, min = 0): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min)
    throw new SiftError('INVALID_ARGUMENT', `--${name} must be an integer >= ${min} (got ${v})`, { param: name });
  return n;
}

export function numFlag(v: unknown, name: string, def: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n))
    throw new SiftError('INVALID_ARGUMENT', `--${name} must be a number (got ${v})`, { param: name });
  return n;
}
