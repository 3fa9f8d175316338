#!/usr/bin/env bash
# Runs `node ARGS...` on the Node sift supports (scripts/node-path.sh): npm test, npm start and .ci/run go
# through here, so on a machine with Node 20 they re-exec under the pinned Node that setup installed.
set -euo pipefail
dir=$(bash "$(dirname "$0")/node-path.sh")
export PATH="$dir:$PATH"
exec node "$@"
