#!/usr/bin/env node
// Entry point of the `sift` command: runs the compiled CLI (dist/cli/main.js).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
if (!existsSync(cli)) {
  process.stderr.write('sift: not built yet; run `npm run setup` (installs dependencies and builds) first.\n');
  process.exit(1);
}
await import(cli);
