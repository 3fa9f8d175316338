/** Where sift's own files are: the project root (package.json + shaders/), from sources or from dist/. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SiftError } from './errors.js';

let projectRootCache: string | undefined;

export function projectRoot(): string {
  if (projectRootCache) return projectRootCache;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'shaders'))) break;
    const up = path.dirname(dir);
    if (up === dir) throw new SiftError('INTERNAL', 'cannot find the sift project root (package.json + shaders/)');
    dir = up;
  }
  projectRootCache = dir;
  return dir;
}
