/** Shared pieces of the CLI commands: engine options from ENGINE_SPEC, config file loading, help text. */
import { readFileSync } from 'node:fs';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { DEFAULT_MODEL } from '../checkpoint/models.js';
import { resolveModel } from '../checkpoint/pull.js';
import { ATTENTION_SPEC, type AttentionConfig, attentionConfig } from '../config/attention.js';
import { ENGINE_SPEC, type EngineConfig, engineConfig } from '../config/engine.js';
import { SiftError } from '../config/errors.js';
import { describeSection, flagOf, type SectionSpec, sourceOf } from '../config/schema.js';
import { stderrIsTTY } from './stderr-filter.js';

type OptionDefs = NonNullable<ParseArgsConfig['options']>;

/**
 * parseArgs definitions for every engine field (--max-batch-tokens, --kv-cache-mib, ...), every attention field
 * (--attention, --token-budget, --head-pattern, ...) plus --config.
 */
export function engineOptionDefs(opts: AttentionOffer = {}): OptionDefs {
  const defs: OptionDefs = { config: { type: 'string' } };
  for (const [k, f] of Object.entries(ENGINE_SPEC)) defs[flagOf(k, f)] = { type: 'string' };
  for (const [k, f] of Object.entries(offeredAttention(opts))) defs[flagOf(k, f)] = { type: 'string' };
  return defs;
}

/** Which attention options a command offers: `streaming: false` leaves out the streaming-head fields. */
export interface AttentionOffer {
  streaming?: boolean;
}

/** The streaming-head fields of the attention section. */
export const STREAMING_FIELDS: readonly string[] = ['headPattern', 'streamingFraction', 'sink', 'local'];

function offeredAttention(opts: AttentionOffer): SectionSpec {
  if (opts.streaming !== false) return ATTENTION_SPEC;
  return Object.fromEntries(Object.entries(ATTENTION_SPEC).filter(([k]) => !STREAMING_FIELDS.includes(k)));
}

/** The flags of a section's fields, keyed by field name (what resolveSection takes as `flags`). */
export function flagValues(spec: SectionSpec, values: Record<string, unknown>): Record<string, unknown> {
  const flags: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(spec)) flags[k] = values[flagOf(k, f)];
  return flags;
}

/**
 * Attention config from defaults < config file ("attention" section) < SIFT_ATTENTION_* env < flags. A command that
 * does not offer the streaming-head fields (`streaming: false`) refuses a head pattern set through the config file
 * or the environment, naming where it was set, rather than failing inside the forward pass.
 */
export function attentionConfigFrom(
  values: Record<string, unknown>,
  pageSize: number,
  opts: AttentionOffer & { command?: string } = {},
): AttentionConfig {
  const { sections, fileName } = readConfigFile(values.config as string | undefined);
  const layers = { file: sections.attention, fileName, env: process.env, flags: flagValues(ATTENTION_SPEC, values) };
  const c = attentionConfig(layers, pageSize);
  if (opts.streaming === false && c.headPattern !== '') {
    throw new SiftError(
      'CONFIG_INVALID',
      `${sourceOf('ATTENTION', ATTENTION_SPEC, layers, 'headPattern')} sets a head pattern, but sift ${opts.command ?? 'this command'} ` +
        'measures retrieval heads only (no streaming rings); unset it, or use sift generate / sift serve for streaming heads',
    );
  }
  return c;
}

/** The sections a config file may have, each one concern's fields (config/engine.ts, attention.ts, server.ts). */
export const CONFIG_SECTIONS = ['engine', 'attention', 'server'] as const;
export type ConfigSection = (typeof CONFIG_SECTIONS)[number];

/**
 * Reads the JSON config file (--config FILE, else env SIFT_CONFIG): { "engine": {...}, "attention": {...},
 * "server": {...} }. An unknown section is an error, as an unknown key inside one is (resolveSection).
 */
export function readConfigFile(path: string | undefined): {
  sections: Partial<Record<ConfigSection, Record<string, unknown>>>;
  fileName?: string;
} {
  const file = path ?? process.env.SIFT_CONFIG;
  if (!file) return { sections: {} };
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (e) {
    throw new SiftError('CONFIG_INVALID', `cannot read config file ${file}: ${(e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    throw new SiftError('CONFIG_INVALID', `config file ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new SiftError('CONFIG_INVALID', `config file ${file}: the top level must be an object of sections`);
  }
  const sections: Partial<Record<ConfigSection, Record<string, unknown>>> = {};
  for (const [k, s] of Object.entries(v)) {
    if (!(CONFIG_SECTIONS as readonly string[]).includes(k)) {
      throw new SiftError(
        'CONFIG_INVALID',
        `config file ${file}: unknown section "${k}" (sections: ${CONFIG_SECTIONS.join(', ')})`,
      );
    }
    if (typeof s !== 'object' || s === null || Array.isArray(s)) {
      throw new SiftError('CONFIG_INVALID', `config file ${file}: section "${k}" must be an object of settings`);
    }
    sections[k as ConfigSection] = s as Record<string, unknown>;
  }
  return { sections, fileName: file };
}

/** Engine config from defaults < config file < SIFT_ENGINE_* env < flags. */
export function engineConfigFrom(values: Record<string, unknown>): EngineConfig {
  const { sections, fileName } = readConfigFile(values.config as string | undefined);
  return engineConfig({ file: sections.engine, fileName, env: process.env, flags: flagValues(ENGINE_SPEC, values) });
}

export function engineHelp(opts: AttentionOffer = {}): string {
  return [
    'configuration: defaults < --config FILE (JSON, sections "engine", "attention", "server"; or env SIFT_CONFIG)',
    '               < environment (SIFT_<SECTION>_<FIELD>) < flags',
    '',
    'engine options (also in a --config JSON file under "engine", or env):',
    ...describeSection('ENGINE', ENGINE_SPEC),
    '',
    'attention options (also in a --config JSON file under "attention", or env):',
    ...describeSection('ATTENTION', offeredAttention(opts)),
  ].join('\n');
}

/** A value that parseArgs would take for an option of its own: a negative number such as -1 or -0.5. */
const NEGATIVE_NUMBER = /^-(\d|\.\d)/;

/**
 * parseArgs with strict checking; `--help` handled by the caller. `command` names the command in messages
 * ("generate", "bench forward"); `maxPositionals` is how many bare arguments it takes (default none).
 *
 * A string option's value may be a negative number (`--temperature -1`): it is passed as `--temperature=-1`, so the
 * range check of the option reports it instead of parseArgs taking "-1" for an option. Every parse failure is a
 * SiftError INVALID_ARGUMENT whose message names the option and points at --help.
 */
export function parse(
  argv: string[],
  options: OptionDefs,
  command: string,
  maxPositionals = 0,
): { values: Record<string, unknown>; positionals: string[] } {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const name = a.startsWith('--') && !a.includes('=') ? a.slice(2) : null;
    const next = argv[i + 1];
    if (name && options[name]?.type === 'string' && next !== undefined && NEGATIVE_NUMBER.test(next)) {
      args.push(`${a}=${next}`);
      i++;
    } else {
      args.push(a);
    }
  }
  const help = `see sift ${command} --help`;
  let r: ReturnType<typeof parseArgs>;
  try {
    r = parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: true,
    });
  } catch (e) {
    throw new SiftError('INVALID_ARGUMENT', `${parseArgsProblem(e as NodeJS.ErrnoException)} (${help})`);
  }
  if (!r.values.help && r.positionals.length > maxPositionals) {
    throw new SiftError('INVALID_ARGUMENT', `unexpected argument "${r.positionals[maxPositionals]}" (${help})`);
  }
  return { values: r.values as Record<string, unknown>, positionals: r.positionals };
}

/** parseArgs' error in one short clause: "unknown option --foo", "--max-tokens needs a value", ... */
function parseArgsProblem(e: NodeJS.ErrnoException): string {
  const msg = String(e.message ?? e).split('\n')[0];
  const opt = /'(-{1,2}[^' ]+)/.exec(msg)?.[1] ?? null;
  switch (e.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return opt ? `unknown option ${opt}` : msg;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (opt && /argument missing/.test(msg)) return `${opt} needs a value`;
      if (opt && /does not take an argument/.test(msg)) return `${opt} takes no value`;
      if (opt && /ambiguous/.test(msg))
        return `${opt} needs a value (write ${opt}=VALUE for a value that begins with "-")`;
      return msg;
    default:
      return msg;
  }
}

/** Progress on stderr that rewrites one line on a terminal, and prints sparse lines otherwise. */
export function progressLine(): { update: (s: string) => void; done: (s?: string) => void } {
  const tty = stderrIsTTY();
  let last = 0;
  return {
    update(s) {
      const now = Date.now();
      if (tty) process.stderr.write(`\r\x1b[K${s}`);
      else if (now - last > 2000) {
        process.stderr.write(`${s}\n`);
        last = now;
      }
    },
    done(s) {
      if (tty) process.stderr.write('\r\x1b[K');
      if (s) process.stderr.write(`${s}\n`);
    },
  };
}

/**
 * The inputs of the commands that run a model over a text (calibrate, imatrix): --model's folder (a known name is
 * pulled, showing its progress on `progress`) and the UTF-8 contents of --text; an unreadable file is a clear error naming it.
 */
export async function modelAndText(
  model: string | undefined,
  file: string,
  progress: ReturnType<typeof progressLine>,
): Promise<{ dir: string; text: string }> {
  const dir = await resolveModel(model ?? DEFAULT_MODEL, {
    autoPull: true,
    onProgress: (p) => progress.update(p.message),
  });
  progress.done();
  try {
    return { dir, text: readFileSync(file, 'utf8') };
  } catch (e) {
    throw new SiftError('INVALID_ARGUMENT', `cannot read --text ${file}: ${(e as Error).message}`, { param: 'text' });
  }
}
