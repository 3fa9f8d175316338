#!/usr/bin/env bash
# Prints the directory of the node binary sift runs on: .node/'s pinned Node when the machine's is older than 22
# (scripts/ensure-node.sh installs it), else the machine's. Put it first on PATH so `node`, `npm` and tools with a
# `#!/usr/bin/env node` line all run on it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -ge 22 ]; then dirname "$(command -v node)"; exit 0; fi
if [ -x "$root/.node/node_modules/node/bin/node" ]; then echo "$root/.node/node_modules/node/bin"; exit 0; fi
echo "sift: Node $(node --version 2>/dev/null || echo '(none)') is too old (need >= 22); run \`npm run setup\` to install a supported one" >&2
exit 1
