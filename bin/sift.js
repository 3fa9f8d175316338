#!/usr/bin/env node
// Entry point of the `sift` command: runs the compiled CLI (dist/cli/main.js) on Node >= 22. In a checkout whose
// machine Node is older, it re-runs itself on the pinned Node that `npm run setup` installed into .node/.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const major = Number(process.versions.node.split('.')[0]);
if (major < 22) {
  const pinned = fileURLToPath(new URL('../.node/node_modules/node/bin/node', import.meta.url));
  if (!existsSync(pinned)) {
    process.stderr.write(
      `sift: Node ${process.version} is too old; sift needs Node 22 or newer (24 LTS recommended).\n`,
    );
    process.exit(1);
  }
  const child = spawn(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
} else {
  const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
  if (!existsSync(cli)) {
    process.stderr.write('sift: not built yet; run `npm run setup` (installs dependencies and builds) first.\n');
    process.exit(1);
  }
  await import(cli);
}
