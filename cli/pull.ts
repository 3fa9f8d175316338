/** `sift pull NAME`: fetch and convert a known model into the models folder (a no-op when already there). */

import { DEFAULT_MODEL, knownModelNames, modelsDir } from '../checkpoint/models.js';
import { pull } from '../checkpoint/pull.js';
import { parse, progressLine } from './common.js';

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { 'models-dir': { type: 'string' } }, 'pull', 1);
  if (values.help) {
    process.stdout.write(
      `usage: sift pull [NAME] [--models-dir DIR]\n\n  Fetches a known model (${knownModelNames().join(', ')}; default ${DEFAULT_MODEL}), checks its checksum and\n` +
        `  converts it into an HF directory under the models folder (default ${modelsDir()}, env SIFT_MODELS_DIR).\n`,
    );
    return 0;
  }
  const name = positionals[0] ?? DEFAULT_MODEL;
  const progress = progressLine();
  const r = await pull(name, {
    modelsDir: values['models-dir'] as string | undefined,
    // the last line says whether anything was fetched; the 'cached' progress line would say it twice
    onProgress: (p) => {
      if (p.phase !== 'cached') progress.update(p.message);
    },
  });
  progress.done(r.fetched ? `pulled ${name} into ${r.dir}` : `${name} is already in ${r.dir}`);
  return 0;
}
