/**
 * Dawn (the WebGPU binding, npm `webgpu`) prints two warnings from native code straight to file descriptor 2 each
 * time it opens an adapter:
 *   Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.
 *   Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.
 * They are harmless (sift uses no dynamic offsets), no Dawn toggle or option turns them off, and JavaScript cannot
 * intercept a native write to fd 2. So the commands that open a GPU run in a child process whose stderr passes
 * through this filter, which drops exactly those two lines and forwards everything else as it arrives.
 *
 * The child runs in its own session (it does not get the terminal's Ctrl-C directly): the parent forwards each
 * SIGINT / SIGTERM / SIGHUP it receives exactly once, so `sift serve`'s "a second signal exits at once" still means
 * a second Ctrl-C. If the parent dies without forwarding (kill -9), the child sees its IPC channel close and kills
 * itself at once with SIGKILL, so `kill -9 PID` ends the command as it did without the filter (a server's streams
 * break at once; nothing lingers). SIFT_STDERR_FILTER=off runs the command in-process, unfiltered.
 */
import { spawn } from 'node:child_process';

/** One of Dawn's two limit warnings (a whole line, without its newline). */
export const DAWN_LIMIT_WARNING =
  /^Warning: maxDynamic(?:Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.\r?$/;

const WARNING_START = 'Warning: maxDynamic';
/** A held partial line longer than this cannot be a warning: it is forwarded. */
const MAX_HELD = 256;

/**
 * Drops Dawn's limit warnings from a stream of text. Text is forwarded at once, except the start of a line that
 * could still become a warning, which is held until its newline (or until it can no longer match).
 */
export class DawnWarningFilter {
  private held = '';
  /** The current line has been (partly) forwarded already: the rest of it passes unchanged. */
  private passing = false;

  push(text: string): string {
    let out = '';
    for (const piece of text.split(/(?<=\n)/)) {
      if (piece === '') continue;
      const complete = piece.endsWith('\n');
      if (this.passing) {
        out += piece;
        if (complete) this.passing = false;
        continue;
      }
      const line = this.held + piece;
      this.held = '';
      if (complete) {
        if (!DAWN_LIMIT_WARNING.test(line.slice(0, -1))) out += line;
      } else if (line.length <= MAX_HELD && (WARNING_START.startsWith(line) || line.startsWith(WARNING_START))) {
        this.held = line;
      } else {
        out += line;
        this.passing = true;
      }
    }
    return out;
  }

  /** Whatever is still held (a last line without a newline). */
  end(): string {
    const h = this.held;
    this.held = '';
    return DAWN_LIMIT_WARNING.test(h) ? '' : h;
  }
}

/** The env variable that marks the child (and tells it whether the parent's stderr is a terminal), or turns the filter off. */
export const FILTER_ENV = 'SIFT_STDERR_FILTER';

/** True in the child that runFiltered started. */
export function isFilteredChild(): boolean {
  return process.env[FILTER_ENV] === 'child' || process.env[FILTER_ENV] === 'child-tty';
}

/** True in the filtered child, or when the user turned the filter off: run the command here. */
export function runHere(): boolean {
  const v = process.env[FILTER_ENV];
  return v === 'off' || v === 'child' || v === 'child-tty' || process.platform === 'win32';
}

/** Whether stderr is a terminal, as seen by the user (the filtered child's stderr is the parent's pipe). */
export function stderrIsTTY(): boolean {
  return process.stderr.isTTY === true || process.env[FILTER_ENV] === 'child-tty';
}

/**
 * In the filtered child: die with the parent. The parent forwards every signal it can catch, so a parent gone
 * without a word was killed (kill -9): the child ends the same way, at once.
 */
export function watchParent(): void {
  if (!isFilteredChild() || !process.channel) return;
  process.on('disconnect', () => process.kill(process.pid, 'SIGKILL'));
  process.channel.unref();
}

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Runs `node <script> ...args` (this CLI) as a child with Dawn's warnings filtered from its stderr; resolves with
 * its exit status. A child killed by a signal kills this process with the same signal.
 */
export function runFiltered(script: string, args: string[]): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, script, ...args], {
    stdio: ['inherit', 'inherit', 'pipe', 'ipc'],
    detached: true,
    env: { ...process.env, [FILTER_ENV]: process.stderr.isTTY ? 'child-tty' : 'child' },
  });
  const filter = new DawnWarningFilter();
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (s: string) => {
    const out = filter.push(s);
    if (out) process.stderr.write(out);
  });
  const forward = (sig: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
  };
  for (const s of FORWARDED) process.on(s, forward);
  return new Promise((resolve) => {
    child.on('error', (e) => {
      process.stderr.write(`sift: cannot start the command: ${e.message}\n`);
      resolve(1);
    });
    child.on('close', (code, signal) => {
      for (const s of FORWARDED) process.off(s, forward);
      const rest = filter.end();
      if (rest) process.stderr.write(rest);
      if (signal) {
        process.kill(process.pid, signal);
        return;
      }
      resolve(code ?? 1);
    });
  });
}
