/**
 * The `sift` command line: sift <command> [options]. Each command lives in engine/cli/ or server/;
 * this file only dispatches and turns errors into one clear line and an exit code.
 */
import { SiftError } from '../config/errors.js';

const COMMANDS: Record<
  string,
  { summary: string; load: () => Promise<{ main: (argv: string[]) => Promise<number> }> }
> = {
  serve: {
    summary: 'serve the OpenAI-compatible HTTP/SSE API (chat, completions, models, health, metrics)',
    load: () => import('./serve.js'),
  },
  generate: {
    summary: 'generate tokens from a prompt (text, chat or token ids)',
    load: () => import('./generate.js'),
  },
  pull: {
    summary: 'download and convert a known model (e.g. stories15M) into the models folder',
    load: () => import('./pull.js'),
  },
  bench: {
    summary:
      'benchmarks: forward (prefill/decode tok/s, batches), attention (kernels dense vs sparse), decode, agreement',
    load: () => import('./bench.js'),
  },
  calibrate: {
    summary: 'score streaming vs retrieval heads over a text (attention mass outside sink+local) -> heads.tsv',
    load: () => import('./calibrate.js'),
  },
  kv: {
    summary: 'KV-cache bytes per token and per sequence, dense vs streaming heads',
    load: () => import('./kv.js'),
  },
  gpu: {
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
    'Run `sift <command> --help` for the options of one command.',
  ];
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(`${usage()}\n`);
    return cmd ? 0 : 2;
  }
  const entry = COMMANDS[cmd];
  if (!entry) {
    process.stderr.write(`sift: unknown command "${cmd}"\n\n${usage()}\n`);
    return 2;
  }
  const mod = await entry.load();
  return mod.main(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof SiftError) {
      process.stderr.write(`sift: error [${err.code}]: ${err.message}\n`);
    } else if (err instanceof Error && (err as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      process.stderr.write(`sift: ${err.message}\n`);
      process.exitCode = 2;
      return;
    } else {
      process.stderr.write(
        `sift: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
    }
    process.exitCode = 1;
  },
);
