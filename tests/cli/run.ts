/** Runs the built `sift` command as a child process, as a user would, and checks how it fails. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';

export const CLI = path.resolve('dist/cli/main.js');

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** `node dist/cli/main.js ...args`; resolves when it exits (killed after `timeoutMs`). */
export function runCli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString('utf8');
    });
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString('utf8');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Maps `xs` through `f`, at most `limit` at a time (CLI runs are mostly process start-up). */
export async function pooled<T, R>(xs: readonly T[], limit: number, f: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(xs.length);
  let next = 0;
  const worker = async () => {
    while (next < xs.length) {
      const i = next++;
      out[i] = await f(xs[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, xs.length) }, worker));
  return out;
}

/** The lines of `s` that hold anything. */
export const linesOf = (s: string) => s.split('\n').filter((l) => l.trim() !== '');

/**
 * A failed run as every CLI error path must look: a non-zero exit status, exactly one line on stderr that matches
 * `want`, and no stack trace anywhere.
 */
export function assertOneLineError(r: CliRun, want: RegExp, what: string): void {
  const why = `${what}\nexit ${r.code}\nstderr:\n${r.stderr}\nstdout:\n${r.stdout.slice(0, 2000)}`;
  assert.notEqual(r.code, 0, why);
  assert.notEqual(r.code, null, why);
  const lines = linesOf(r.stderr);
  assert.equal(lines.length, 1, why);
  assert.match(lines[0], /^sift: /, why);
  assert.match(lines[0], want, why);
  assert.doesNotMatch(`${r.stderr}\n${r.stdout}`, /\n\s+at .+:\d+:\d+/, `a stack trace: ${why}`);
}
