/** Shared pieces of the CLI commands: engine options from ENGINE_SPEC, config file loading, help text. */
import { readFileSync } from 'node:fs';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { ATTENTION_SPEC, type AttentionConfig, attentionConfig } from '../config/attention.js';
import { ENGINE_SPEC, type EngineConfig, engineConfig } from '../config/engine.js';
import { SiftError } from '../config/errors.js';
import { describeSection, toFlagName } from '../config/schema.js';

type OptionDefs = NonNullable<ParseArgsConfig['options']>;

/** Flag of an attention field: `--attention dense|sparse` for the mode, else the kebab-case name. */
const attentionFlag = (k: string) => (k === 'mode' ? 'attention' : toFlagName(k));

/**
 * parseArgs definitions for every engine field (--max-batch-tokens, --kv-cache-mib, ...), every attention field
 * (--attention, --token-budget, --head-pattern, ...) plus --config.
 */
export function engineOptionDefs(): OptionDefs {
  const defs: OptionDefs = { config: { type: 'string' } };
  for (const k of Object.keys(ENGINE_SPEC)) defs[toFlagName(k)] = { type: 'string' };
  for (const k of Object.keys(ATTENTION_SPEC)) defs[attentionFlag(k)] = { type: 'string' };
  return defs;
}

/** Attention config from defaults < config file ("attention" section) < SIFT_ATTENTION_* env < flags. */
export function attentionConfigFrom(values: Record<string, unknown>, pageSize: number): AttentionConfig {
  const file = readConfigFile(values.config as string | undefined);
  const flags: Record<string, unknown> = {};
  for (const k of Object.keys(ATTENTION_SPEC)) flags[k] = values[attentionFlag(k)];
  return attentionConfig(
    { file: file.attention as Record<string, unknown> | undefined, env: process.env, flags },
    pageSize,
  );
}

/** Reads a JSON config file: { "engine": {...}, "server": {...}, ... }. */
export function readConfigFile(path: string | undefined): Record<string, Record<string, unknown>> {
  const file = path ?? process.env.SIFT_CONFIG;
  if (!file) return {};
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (e) {
    throw new SiftError('CONFIG_INVALID', `cannot read config file ${file}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(raw);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('top level must be an object');
    return v;
  } catch (e) {
    throw new SiftError('CONFIG_INVALID', `config file ${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Engine config from defaults < config file < SIFT_ENGINE_* env < flags. */
export function engineConfigFrom(values: Record<string, unknown>): EngineConfig {
  const file = readConfigFile(values.config as string | undefined);
  const flags: Record<string, unknown> = {};
  for (const k of Object.keys(ENGINE_SPEC)) flags[k] = values[toFlagName(k)];
  return engineConfig({ file: file.engine as Record<string, unknown> | undefined, env: process.env, flags });
}

export function engineHelp(): string {
  return [
    'engine options (also in a --config JSON file under "engine", or env):',
    ...describeSection('ENGINE', ENGINE_SPEC),
    '',
    'attention options (also in a --config JSON file under "attention", or env):',
    ...describeSection('ATTENTION', ATTENTION_SPEC, attentionFlag),
  ].join('\n');
}

/** parseArgs with strict checking; `--help` handled by the caller. */
export function parse(argv: string[], options: OptionDefs): { values: Record<string, unknown>; positionals: string[] } {
  const r = parseArgs({
    args: argv,
    options: { ...options, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: true,
  });
  return { values: r.values as Record<string, unknown>, positionals: r.positionals };
}

/** Progress on stderr that rewrites one line on a terminal, and prints sparse lines otherwise. */
export function progressLine(): { update: (s: string) => void; done: (s?: string) => void } {
  const tty = process.stderr.isTTY;
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
