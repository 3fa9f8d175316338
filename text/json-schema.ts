/**
 * The JSON schema subset sift constrains output to (text/grammar.ts compiles it with xgrammar), and the check that
 * a request's schema stays inside it. Keywords outside the subset are refused, never ignored: a schema keyword the
 * grammar would drop (not, allOf, uniqueItems, multipleOf, pattern, format, bounds on non-integers, ...) would let
 * through output that does not validate, so such a schema is INVALID_ARGUMENT naming every offending keyword by
 * its path. minLength / maxLength are refused too: xgrammar 0.1.27 compiles them to a character class that admits
 * control characters and broken UTF-8 (seen in tests/text/grammar.test.ts before they were taken out).
 */
import { SiftError } from '../config/errors.js';

/** Keywords that describe and never constrain. */
const ANNOTATIONS = new Set([
  'title',
  'description',
  'default',
  'examples',
  '$schema',
  '$id',
  '$comment',
  'deprecated',
  'readOnly',
  'writeOnly',
]);

/** Keywords the grammar enforces exactly. */
const SUPPORTED = new Set([
  'type',
  'enum',
  'const',
  'anyOf',
  '$ref',
  '$defs',
  'definitions',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'prefixItems',
  'minItems',
  'maxItems',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
]);

const TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);
const MAX_DEPTH = 32;

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;

/** Problems of `schema` as "path: what" strings ([] = inside the subset). */
export function schemaProblems(schema: unknown): string[] {
  const out: string[] = [];
  const root = isObject(schema) ? schema : {};
  walk(schema, '', 0, root, out);
  return out;
}

function at(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function walk(s: unknown, path: string, depth: number, root: Json, out: string[]): void {
  const here = path || '(root)';
  if (depth > MAX_DEPTH) {
    out.push(`${here}: nested deeper than ${MAX_DEPTH} levels`);
    return;
  }
  if (s === true) return;
  if (!isObject(s)) {
    out.push(`${here}: a schema must be an object`);
    return;
  }
  for (const k of Object.keys(s)) {
    if (!ANNOTATIONS.has(k) && !SUPPORTED.has(k)) out.push(`${at(path, k)}: unsupported keyword`);
  }
  const types = s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type];
  for (const t of types)
    if (!TYPES.has(t as string)) out.push(`${at(path, 'type')}: unknown type ${JSON.stringify(t)}`);
  for (const k of ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum']) {
    if (s[k] === undefined) continue;
    if (types.length !== 1 || types[0] !== 'integer' || !Number.isInteger(s[k])) {
      out.push(`${at(path, k)}: bounds are supported on integers only (type "integer", integer bound)`);
    }
  }
  for (const k of ['minItems', 'maxItems']) {
    if (s[k] !== undefined && !isCount(s[k])) out.push(`${at(path, k)}: must be an integer >= 0`);
  }
  const conflict = (lo: string, hi: string) => {
    if (typeof s[lo] === 'number' && typeof s[hi] === 'number' && (s[lo] as number) > (s[hi] as number)) {
      out.push(`${at(path, lo)}: greater than ${hi}; no value satisfies the schema`);
    }
  };
  conflict('minItems', 'maxItems');
  conflict('minimum', 'maximum');
  if (s.enum !== undefined && (!Array.isArray(s.enum) || s.enum.length === 0)) {
    out.push(`${at(path, 'enum')}: must be a non-empty array`);
  }
  if (s.anyOf !== undefined) {
    if (!Array.isArray(s.anyOf) || s.anyOf.length === 0) out.push(`${at(path, 'anyOf')}: must be a non-empty array`);
    else for (const [i, x] of s.anyOf.entries()) walk(x, `${at(path, 'anyOf')}[${i}]`, depth + 1, root, out);
  }
  if (s.$ref !== undefined) {
    const ref = s.$ref;
    const m = typeof ref === 'string' ? /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref) : null;
    if (ref !== '#' && (!m || !isObject(root[m[1]]) || !((root[m[1]] as Json)[m[2]] !== undefined))) {
      out.push(`${at(path, '$ref')}: only local references to #/$defs/NAME or #/definitions/NAME that exist`);
    }
  }
  for (const defs of ['$defs', 'definitions']) {
    if (s[defs] === undefined) continue;
    if (!isObject(s[defs])) out.push(`${at(path, defs)}: must be an object`);
    else for (const [k, v] of Object.entries(s[defs] as Json)) walk(v, at(at(path, defs), k), depth + 1, root, out);
  }
  if (s.properties !== undefined) {
    if (!isObject(s.properties)) out.push(`${at(path, 'properties')}: must be an object`);
    else
      for (const [k, v] of Object.entries(s.properties as Json))
        walk(v, at(at(path, 'properties'), k), depth + 1, root, out);
  }
  if (s.required !== undefined) {
    const props = isObject(s.properties) ? (s.properties as Json) : {};
    if (!Array.isArray(s.required) || !s.required.every((r) => typeof r === 'string')) {
      out.push(`${at(path, 'required')}: must be an array of property names`);
    } else {
      for (const r of s.required as string[]) {
        if (!(r in props)) out.push(`${at(path, 'required')}: "${r}" is not in properties`);
      }
    }
  }
  const ap = s.additionalProperties;
  if (ap !== undefined && typeof ap !== 'boolean') walk(ap, at(path, 'additionalProperties'), depth + 1, root, out);
  if (s.items !== undefined && typeof s.items !== 'boolean') walk(s.items, at(path, 'items'), depth + 1, root, out);
  if (s.prefixItems !== undefined) {
    if (!Array.isArray(s.prefixItems)) out.push(`${at(path, 'prefixItems')}: must be an array`);
    else
      for (const [i, x] of s.prefixItems.entries()) walk(x, `${at(path, 'prefixItems')}[${i}]`, depth + 1, root, out);
  }
}

/**
 * Throws INVALID_ARGUMENT (param `param`, the body field the schema came from) naming every keyword of `schema`
 * outside the subset.
 */
export function checkSchema(schema: unknown, param: string): void {
  const problems = schemaProblems(schema);
  if (problems.length === 0) return;
  throw new SiftError(
    'INVALID_ARGUMENT',
    `unsupported JSON schema for constrained output: ${problems.slice(0, 8).join('; ')}${problems.length > 8 ? `; and ${problems.length - 8} more` : ''}`,
    { param },
  );
}
