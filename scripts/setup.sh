#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine (as root) or a developer checkout:
#   1. Mesa lavapipe >= 25 + Vulkan loader when no WebGPU driver is present (scripts/ensure-webgpu.sh)
#   2. with --tests: nginx, which the cluster test runs in front of sift replicas (scripts/ensure-nginx.sh)
#   3. npm dependencies from package-lock.json (npm ci) when node_modules is missing or stale
#   4. the TypeScript build (tsc, incremental)
# Quick when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  case "$arg" in
    --tests) bash scripts/ensure-nginx.sh ;;
    *) echo "usage: scripts/setup.sh [--tests]" >&2; exit 2 ;;
  esac
done
bash scripts/ensure-webgpu.sh
stamp=node_modules/.sift-lock-sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "sift: installing npm dependencies (npm ci) ..." >&2
  npm ci --no-audit --no-fund >&2
  echo "$want" > "$stamp"
fi
./node_modules/.bin/tsc -p tsconfig.json
