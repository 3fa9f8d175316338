#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine (as root) or a developer checkout:
#   1. Mesa lavapipe >= 25 + Vulkan loader when no WebGPU driver is present (scripts/ensure-webgpu.sh)
#   2. a supported Node (>= 22): the pinned one into .node/ when the machine's is older (scripts/ensure-node.sh)
#   3. with --tests: nginx, which the cluster test runs in front of sift replicas (scripts/ensure-nginx.sh), and
#      Debian's chromium for the chat page's browser test (scripts/ensure-browser.sh)
#   4. npm dependencies from package-lock.json (npm ci, on the supported Node) when node_modules is missing or stale
#   5. the TypeScript build (tsc, incremental)
# Quick when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  case "$arg" in
    --tests)
      bash scripts/ensure-nginx.sh
      bash scripts/ensure-browser.sh
      ;;
    *) echo "usage: scripts/setup.sh [--tests]" >&2; exit 2 ;;
  esac
done
bash scripts/ensure-webgpu.sh
bash scripts/ensure-node.sh
PATH="$(bash scripts/node-path.sh):$PATH"
export PATH
stamp=node_modules/.sift-lock-sha
want=$( (sha256sum package-lock.json; node --version) | sha256sum | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "sift: installing npm dependencies (npm ci, Node $(node --version)) ..." >&2
  npm ci --no-audit --no-fund >&2
  echo "$want" > "$stamp"
fi
./node_modules/.bin/tsc -p tsconfig.json
