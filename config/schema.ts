/**
 * Typed, documented, range-checked configuration. Each concern declares its fields once (default, range, doc);
 * values are layered defaults < config file < environment (SIFT_<SECTION>_<FIELD>) < CLI flags, then frozen.
 * Unknown keys are errors, so a typo never silently does nothing.
 */
import { SiftError } from './errors.js';

export type FieldSpec =
  | { kind: 'int'; default: number; min: number; max: number; doc: string }
  | { kind: 'number'; default: number; min: number; max: number; doc: string }
  | { kind: 'bool'; default: boolean; doc: string }
  | { kind: 'string'; default: string; doc: string; choices?: readonly string[] }
  | { kind: 'optional-int'; default: number | null; min: number; max: number; doc: string }
  | { kind: 'optional-number'; default: number | null; min: number; max: number; doc: string };

export type SectionSpec = Record<string, FieldSpec>;

type ValueOf<F extends FieldSpec> = F extends { kind: 'bool' }
  ? boolean
  : F extends { kind: 'string' }
    ? string
    : F extends { kind: 'optional-int' } | { kind: 'optional-number' }
      ? number | null
      : number;

export type SectionValues<S extends SectionSpec> = { readonly [K in keyof S]: ValueOf<S[K]> };

/** camelCase -> SNAKE_CASE for environment variables, kebab-case for flags. */
export const toEnvName = (section: string, key: string) =>
  `SIFT_${section}_${key}`.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
export const toFlagName = (key: string) => key.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();

function coerce(section: string, key: string, spec: FieldSpec, raw: unknown, source: string): unknown {
  const where = `${source}: ${section}.${key}`;
  const bad = (why: string) => new SiftError('CONFIG_INVALID', `${where} ${why}`, { param: key });
  if (spec.kind === 'bool') {
    if (typeof raw === 'boolean') return raw;
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    throw bad(`must be true or false (got ${JSON.stringify(raw)})`);
  }
  if (spec.kind === 'string') {
    if (typeof raw !== 'string') throw bad(`must be a string (got ${JSON.stringify(raw)})`);
    if (spec.choices && !spec.choices.includes(raw))
      throw bad(`must be one of ${spec.choices.join(', ')} (got "${raw}")`);
    return raw;
  }
  if (
    (spec.kind === 'optional-int' || spec.kind === 'optional-number') &&
    (raw === null || raw === 'null' || raw === '')
  ) {
    return null;
  }
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : Number.NaN;
  if (!Number.isFinite(n)) throw bad(`must be a number (got ${JSON.stringify(raw)})`);
  if ((spec.kind === 'int' || spec.kind === 'optional-int') && !Number.isInteger(n))
    throw bad(`must be an integer (got ${n})`);
  if (n < spec.min || n > spec.max) throw bad(`must be in [${spec.min}, ${spec.max}] (got ${n})`);
  return n;
}

/**
 * Resolves one section. `file` is the section's object from a config file, `env` the process environment,
 * `flags` values from the command line keyed by field name.
 */
export function resolveSection<S extends SectionSpec>(
  name: string,
  spec: S,
  layers: { file?: Record<string, unknown>; env?: NodeJS.ProcessEnv; flags?: Record<string, unknown> } = {},
): SectionValues<S> {
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(spec)) out[k] = f.default;
  if (layers.file) {
    for (const [k, v] of Object.entries(layers.file)) {
      if (!(k in spec)) {
        throw new SiftError(
          'CONFIG_INVALID',
          `config file: unknown key ${name}.${k} (known: ${Object.keys(spec).join(', ')})`,
        );
      }
      out[k] = coerce(name, k, spec[k], v, 'config file');
    }
  }
  if (layers.env) {
    for (const [k, f] of Object.entries(spec)) {
      const v = layers.env[toEnvName(name, k)];
      if (v !== undefined) out[k] = coerce(name, k, f, v, `env ${toEnvName(name, k)}`);
    }
  }
  if (layers.flags) {
    for (const [k, v] of Object.entries(layers.flags)) {
      if (v === undefined) continue;
      if (!(k in spec)) throw new SiftError('CONFIG_INVALID', `unknown option --${toFlagName(k)}`);
      out[k] = coerce(name, k, spec[k], v, `--${toFlagName(k)}`);
    }
  }
  return Object.freeze(out) as SectionValues<S>;
}

/** Help text lines for a section: flag, default, doc. */
export function describeSection(
  name: string,
  spec: SectionSpec,
  flagOf: (key: string) => string = toFlagName,
): string[] {
  return Object.entries(spec).map(([k, f]) => {
    const range =
      'min' in f ? ` [${f.min}..${f.max}]` : f.kind === 'string' && f.choices ? ` {${f.choices.join('|')}}` : '';
    return `  --${flagOf(k).padEnd(22)} ${f.doc} (default ${JSON.stringify(f.default)}${range}; env ${toEnvName(name, k)})`;
  });
}
