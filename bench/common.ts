/**
 * Pieces every `sift bench` suite shares: the run's metadata (date, adapter, machine, load average at start and end,
 * exact command line), the model to load (a known model / HF directory, or a synthetic preset written once), list
 * flags, and writing the JSON result next to the printed markdown table.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_MODEL } from '../checkpoint/models.js';
import { resolveModel } from '../checkpoint/pull.js';
import { SYNTHETIC_PRESETS, writeSyntheticCheckpoint } from '../checkpoint/synthetic.js';
import { SiftError } from '../config/errors.js';
import { intFlag } from '../config/flags.js';

export interface RunMeta {
  date: string;
  command: string;
  adapter: string;
  adapterDescription: string;
  machine: { cpus: number; cpuModel: string; memGiB: number; platform: string; node: string };
  loadavgStart: number[];
  loadavgEnd: number[];
  /** Set when the 1-minute load average at start or end exceeded the core count + 1 (numbers less trustworthy). */
  loadNote?: string;
}

/** Metadata captured at the start of a run; call `finish` at the end for the closing load average. */
export function startMeta(adapter: { adapterName: string; description: string }): RunMeta & { finish(): RunMeta } {
  const cpus = os.cpus();
  const meta: RunMeta = {
    date: new Date().toISOString(),
    command: ['sift', ...process.argv.slice(2)].join(' '),
    adapter: adapter.adapterName,
    adapterDescription: adapter.description,
    machine: {
      cpus: cpus.length,
      cpuModel: cpus[0]?.model ?? '',
      memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
      platform: `${os.platform()} ${os.release()}`,
      node: process.version,
    },
    loadavgStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
    loadavgEnd: [],
  };
  return {
    ...meta,
    finish(): RunMeta {
      const { finish: _f, ...m } = this;
      m.loadavgEnd = os.loadavg().map((x) => Math.round(x * 100) / 100);
      const limit = m.machine.cpus + 1;
      if (m.loadavgStart[0] > limit || m.loadavgEnd[0] > limit) {
        m.loadNote = `load average above ${limit} on ${m.machine.cpus} cores during the run: other work shared the CPUs`;
      }
      return m;
    },
  };
}

/** Header lines of a suite's markdown output. */
export function metaLines(m: RunMeta): string[] {
  return [
    `command: \`${m.command}\``,
    `date ${m.date}; adapter ${m.adapter}${m.adapterDescription ? ` (${m.adapterDescription})` : ''}`,
    `machine: ${m.machine.cpus} x ${m.machine.cpuModel}, ${m.machine.memGiB} GiB, ${m.machine.platform}, node ${m.machine.node}`,
    `load average (1/5/15 min) start ${m.loadavgStart.join(' / ')}, end ${m.loadavgEnd.join(' / ')}${m.loadNote ? ` - NOTE: ${m.loadNote}` : ''}`,
  ];
}

/** A comma-separated list of integers >= min, or `def`. */
export function intList(v: unknown, name: string, def: readonly number[], min = 1): number[] {
  if (v === undefined) return [...def];
  const xs = String(v)
    .split(',')
    .filter((x) => x.trim() !== '')
    .map((x) => intFlag(x.trim(), name, 0, min));
  if (!xs.length) throw new SiftError('INVALID_ARGUMENT', `--${name} needs at least one value`, { param: name });
  return xs;
}

/** The model directory for --model / --synthetic (a synthetic preset is written once under $TMPDIR/sift-synthetic/). */
export async function modelDirFor(
  values: Record<string, unknown>,
  onProgress: (msg: string) => void,
): Promise<{ dir: string; label: string }> {
  if (values.synthetic !== undefined) {
    const named = SYNTHETIC_PRESETS[String(values.synthetic)];
    if (!named) {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `unknown --synthetic preset "${values.synthetic}" (known: ${Object.keys(SYNTHETIC_PRESETS).join(', ')})`,
      );
    }
    // --layers N: the preset cut (or grown) to N layers, written under its own name
    const layers = values.layers === undefined ? named.layers : intFlag(values.layers, 'layers', named.layers, 1);
    const preset = layers === named.layers ? named : { ...named, name: `${named.name}-${layers}l`, layers };
    const dir = path.join(os.tmpdir(), 'sift-synthetic', preset.name);
    if (!existsSync(path.join(dir, 'config.json'))) {
      onProgress(`writing synthetic checkpoint ${preset.name} ...`);
      mkdirSync(path.dirname(dir), { recursive: true });
      writeSyntheticCheckpoint(dir, preset);
    }
    return { dir, label: `synthetic:${preset.name}` };
  }
  const name = (values.model as string | undefined) ?? DEFAULT_MODEL;
  const dir = await resolveModel(name, { autoPull: true, onProgress: (p) => onProgress(p.message) });
  return { dir, label: name };
}

/** Writes the JSON result to --out (if given) and prints the table, or the JSON with --json. */
export function emit(result: unknown, table: string, values: Record<string, unknown>): void {
  const json = `${JSON.stringify(result, null, 2)}\n`;
  if (values.out) {
    const out = String(values.out);
    mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
    writeFileSync(out, json);
  }
  process.stdout.write(values.json ? json : `${table}\n`);
}

/** Times an async function: wall ms. */
export async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}
