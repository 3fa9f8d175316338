/**
 * Typed, documented, range-checked configuration. Each concern declares its fields once (default, range, doc);
 * values are layered defaults < config file < environment (SIFT_<SECTION>_<FIELD>) < CLI flags, then frozen.
 * Unknown keys are errors, so a typo never silently does nothing.
 */
import { SiftError } from './errors.js';

/** What every field declares besides its kind and value range. */
interface FieldText {
  doc: string;
  /** The command-line flag when it is not the kebab-case field name (attention.mode is --attention). */
  flag?: string;
  /** How the default reads in help when its value says little ("the model's max_position_embeddings"). */
  defaultText?: string;
  /** The accepted range in words, for help, when a rule beyond [min, max] applies (the token budget). */
  rangeText?: string;
}

export type FieldSpec = FieldText &
  (
    | { kind: 'int'; default: number; min: number; max: number }
    | { kind: 'number'; default: number; min: number; max: number }
    | { kind: 'bool'; default: boolean }
    | { kind: 'string'; default: string; choices?: readonly string[] }
    | { kind: 'optional-int'; default: number | null; min: number; max: number }
    | { kind: 'optional-number'; default: number | null; min: number; max: number }
  );

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
/** The flag of a field: its own `flag`, else the kebab-case key. */
export const flagOf = (key: string, spec?: FieldSpec) => spec?.flag ?? toFlagName(key);

/** Where a value came from, in the words a message names it by: `--attention`, `SIFT_ATTENTION_MODE`, ... */
function coerce(where: string, key: string, spec: FieldSpec, raw: unknown): unknown {
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
    (raw === null || raw === 'null' || raw === '' || raw === 'auto')
  ) {
    return null;
  }
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : Number.NaN;
  if (!Number.isFinite(n)) throw bad(`must be a number (got ${JSON.stringify(raw)})`);
  if ((spec.kind === 'int' || spec.kind === 'optional-int') && !Number.isInteger(n))
    throw bad(`must be an integer (got ${n})`);
  if (n < spec.min || n > spec.max)
    throw bad(`must be ${spec.rangeText ?? `in [${spec.min}, ${spec.max}]`} (got ${n})`);
  return n;
}

/** The layers of one section; `fileName` names the config file in messages. */
export interface SectionLayers {
  file?: Record<string, unknown>;
  fileName?: string;
  env?: NodeJS.ProcessEnv;
  flags?: Record<string, unknown>;
}

/**
 * Resolves one section. `file` is the section's object from a config file, `env` the process environment,
 * `flags` values from the command line keyed by field name. Messages name a value where the user wrote it: the
 * flag (`--attention must be one of dense, sparse (got "medium")`), the environment variable, or the config
 * file's `section.key`.
 */
export function resolveSection<S extends SectionSpec>(
  name: string,
  spec: S,
  layers: SectionLayers = {},
): SectionValues<S> {
  const section = name.toLowerCase();
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(spec)) out[k] = f.default;
  if (layers.file) {
    const file = `config file${layers.fileName ? ` ${layers.fileName}` : ''}`;
    for (const [k, v] of Object.entries(layers.file)) {
      if (!Object.hasOwn(spec, k)) {
        throw new SiftError(
          'CONFIG_INVALID',
          `${file}: unknown key ${section}.${k} (known: ${Object.keys(spec).join(', ')})`,
        );
      }
      out[k] = coerce(`${file}: ${section}.${k}`, k, spec[k], v);
    }
  }
  if (layers.env) {
    for (const [k, f] of Object.entries(spec)) {
      const v = layers.env[toEnvName(name, k)];
      if (v !== undefined) out[k] = coerce(`environment variable ${toEnvName(name, k)}`, k, f, v);
    }
  }
  if (layers.flags) {
    for (const [k, v] of Object.entries(layers.flags)) {
      if (v === undefined) continue;
      if (!Object.hasOwn(spec, k)) throw new SiftError('CONFIG_INVALID', `unknown option --${toFlagName(k)}`);
      out[k] = coerce(`--${flagOf(k, spec[k])}`, k, spec[k], v);
    }
  }
  return Object.freeze(out) as SectionValues<S>;
}

/**
 * Where a resolved field's value came from, as messages name it: the flag, the environment variable or the config
 * file's section.key (the highest layer that set it), or "the default KEY".
 */
export function sourceOf(name: string, spec: SectionSpec, layers: SectionLayers, key: string): string {
  if (layers.flags?.[key] !== undefined) return `--${flagOf(key, spec[key])}`;
  const env = toEnvName(name, key);
  if (layers.env?.[env] !== undefined) return `environment variable ${env}`;
  if (layers.file && Object.hasOwn(layers.file, key))
    return `config file${layers.fileName ? ` ${layers.fileName}` : ''}: ${name.toLowerCase()}.${key}`;
  return `the default --${flagOf(key, spec[key])}`;
}

/** A field's default as help shows it: its defaultText, "none" for an empty string, else the value. */
function defaultWords(f: FieldSpec): string {
  if (f.defaultText) return f.defaultText;
  if (f.default === '' || f.default === null) return 'none';
  return String(f.default);
}

/** Help text lines for a section: flag, doc, default, range or choices, environment variable. */
export function describeSection(name: string, spec: SectionSpec): string[] {
  return Object.entries(spec).map(([k, f]) => {
    const range = f.rangeText
      ? `; ${f.rangeText}`
      : 'min' in f
        ? `; ${f.min}..${f.max}`
        : f.kind === 'string' && f.choices
          ? `; one of ${f.choices.join(', ')}`
          : '';
    return `  --${flagOf(k, f).padEnd(22)} ${f.doc} (default ${defaultWords(f)}${range}; env ${toEnvName(name, k)})`;
  });
}
