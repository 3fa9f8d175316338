#!/usr/bin/env bash
# Makes sure a supported Node.js (>= 22) runs sift's build, tests and server on this machine.
# When the machine's Node is older (Node 20 left support in April 2026; CI machines still have it), installs the
# pinned Node from the npm registry's `node` package into .node/ (ignored by git; about 190 MB, once) instead of
# failing. Prints nothing on success; scripts/node-path.sh tells which node to use.
# Env: SIFT_NODE_VERSION overrides the pin.
set -euo pipefail
cd "$(dirname "$0")/.."
pin=${SIFT_NODE_VERSION:-24.21.0}
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -ge 22 ]; then exit 0; fi
bin=.node/node_modules/node/bin/node
if [ -x "$bin" ] && [ "$("$bin" --version)" = "v$pin" ]; then exit 0; fi
echo "sift: Node $(node --version 2>/dev/null || echo '(none)') is older than 22; installing Node $pin from the npm registry into .node/ ..." >&2
rm -rf .node.tmp
mkdir -p .node.tmp
printf '{"name":"sift-node","private":true}\n' > .node.tmp/package.json
(cd .node.tmp && npm install --no-audit --no-fund --loglevel=error --save-exact "node@$pin" >&2)
rm -rf .node
mv .node.tmp .node
echo "sift: using $("$bin" --version) from .node/" >&2
