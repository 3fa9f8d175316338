/**
 * The `sift` command line: sift <command> [options]. Each command lives in its own file here;
 * this file only dispatches and turns errors into one clear line and an exit code.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { unknownEnvWarnings } from '../config/env.js';
import { SiftError } from '../config/errors.js';
import { projectRoot } from '../config/paths.js';
import { isFilteredChild, runFiltered, runHere, watchParent } from './stderr-filter.js';

const COMMANDS: Record<
  string,
  {
    summary: string;
    /** Opens a WebGPU adapter (Dawn then prints its warnings: the command runs behind the stderr filter). */
    gpu?: boolean;
    load: () => Promise<{ main: (argv: string[]) => Promise<number> }>;
  }
> = {
  serve: {
    gpu: true,
    summary: 'serve the OpenAI-compatible HTTP/SSE API (chat, completions, models, health, metrics)',
    load: () => import('./serve.js'),
  },
  generate: {
    gpu: true,
    summary: 'generate tokens from a prompt (text, chat or token ids)',
    load: () => import('./generate.js'),
  },
  pull: {
    summary: 'download and convert a known model (e.g. stories15M) into the models folder',
    load: () => import('./pull.js'),
  },
  bench: {
    gpu: true,
    summary:
      'benchmarks: forward (prefill/decode tok/s, batches), attention (kernels dense vs sparse), decode, agreement',
    load: () => import('./bench.js'),
  },
  calibrate: {
    gpu: true,
    summary: 'score streaming vs retrieval heads over a text (attention mass outside sink+local) -> heads.tsv',
    load: () => import('./calibrate.js'),
  },
  imatrix: {
    gpu: true,
    summary: 'importance matrix over a calibration text (mean x^2 of each linear input) for calibrated q4',
    load: () => import('./imatrix.js'),
  },
  kv: {
    summary: 'KV-cache bytes per token and per sequence, dense vs streaming heads',
    load: () => import('./kv.js'),
  },
  gpu: {
    gpu: true,
    summary: 'show the WebGPU adapter sift would use and what it can do',
    load: () => import('./gpu.js'),
  },
  loadtest: {
    summary: 'load an OpenAI-compatible server (or a sift it starts); HTML report',
    load: () => import('./loadtest.js'),
  },
};

export function usage(): string {
  const lines = [
    'usage: sift <command> [options]',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(10)} ${c.summary}`),
    '',
    'Run `sift <command> --help` for the options of one command; `sift --version` prints the version.',
    'Exit status: 0 done, 1 failed, 2 wrong command line or config (one line on stderr says what).',
  ];
  return lines.join('\n');
}

/** The version in package.json. */
function version(): string {
  const pkg = JSON.parse(readFileSync(path.join(projectRoot(), 'package.json'), 'utf8')) as { version?: string };
  return pkg.version ?? 'unknown';
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(`${usage()}\n`);
    return cmd ? 0 : 2;
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    process.stdout.write(`sift ${version()}\n`);
    return 0;
  }
  const entry = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!entry) {
    process.stderr.write(
      `sift: unknown command "${cmd}" (commands: ${Object.keys(COMMANDS).join(', ')}; see sift --help)\n`,
    );
    return 2;
  }
  // A SIFT_* variable nothing reads is almost always a typo: say so (once: not again in the filtered child).
  if (!isFilteredChild()) {
    for (const w of unknownEnvWarnings(process.env)) process.stderr.write(`sift: warning: ${w}\n`);
  }
  // Commands that open a GPU run in a child whose stderr drops Dawn's two native warnings (stderr-filter.ts).
  if (entry.gpu && !rest.includes('--help') && !rest.includes('-h') && !runHere()) {
    return runFiltered(fileURLToPath(import.meta.url), argv);
  }
  watchParent();
  const mod = await entry.load();
  return mod.main(rest);
}

/** Codes that mean the command line (or the config it names) is wrong: exit status 2, as for usage errors. */
const USAGE_CODES = new Set(['INVALID_ARGUMENT', 'CONFIG_INVALID']);

/**
 * Every failure ends as ONE line on stderr and a non-zero exit status: 2 for a wrong command line or config, 1 for
 * anything else. An unexpected error (a bug) shows its message only; SIFT_DEBUG=1 prints its stack as well.
 */
function report(err: unknown): number {
  const oneLine = (s: string) => s.replace(/\s*\n\s*/g, '; ').trim();
  if (err instanceof SiftError) {
    process.stderr.write(`sift: error [${err.code}]: ${oneLine(err.message)}\n`);
    return USAGE_CODES.has(err.code) ? 2 : 1;
  }
  const msg = err instanceof Error ? err.message : String(err);
  const sys = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof sys === 'string' && /^E[A-Z]+$/.test(sys)) {
    // the system refused something (a file that cannot be written, ...): its message says what
    process.stderr.write(`sift: error [${sys}]: ${oneLine(msg)}\n`);
    return 1;
  }
  process.stderr.write(`sift: unexpected error: ${oneLine(msg)} (a bug in sift; SIFT_DEBUG=1 shows where)\n`);
  if (process.env.SIFT_DEBUG && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  return 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = report(err);
  },
);
