#!/usr/bin/env bash
# CI check of the published package: packs sift (prepack builds it), installs the tarball with
# `npm install -g --prefix` into an empty folder on the supported Node, and fails on any EBADENGINE warning; then
# the installed `sift serve` pulls the default model into an empty models folder, serves it, and answers /health
# and one chat completion. Everything lives under a temp folder removed at the end.
# Usage: bash scripts/check-install.sh   (after scripts/setup.sh; about 2-4 minutes on a fresh machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(bash scripts/node-path.sh):$PATH"
export PATH
work=$(mktemp -d /tmp/sift-install-XXXXXX)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
echo "check-install: npm pack (Node $(node --version))" >&2
tarball=$(npm pack --silent --pack-destination "$work" | tail -1)
echo "check-install: npm install -g --prefix $work/prefix $tarball" >&2
npm install -g --no-audit --no-fund --prefix "$work/prefix" "$work/$tarball" > "$work/install.log" 2>&1 || {
  cat "$work/install.log" >&2
  exit 1
}
if grep -q EBADENGINE "$work/install.log"; then
  grep EBADENGINE "$work/install.log" >&2
  echo "check-install: FAILED: EBADENGINE warnings at install" >&2
  exit 1
fi
sift="$work/prefix/bin/sift"
[ -x "$sift" ] || { echo "check-install: FAILED: no $sift" >&2; exit 1; }
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
echo "check-install: $sift serve --port $port (pulls stories15M into an empty models folder)" >&2
SIFT_MODELS_DIR="$work/models" "$sift" serve --host 127.0.0.1 --port "$port" > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 600); do
  if curl -fsS "http://127.0.0.1:$port/health" > /dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then cat "$work/serve.log" >&2; echo "check-install: FAILED: sift serve exited" >&2; exit 1; fi
  sleep 1
done
curl -fsS "http://127.0.0.1:$port/health" > /dev/null || { tail -20 "$work/serve.log" >&2; echo "check-install: FAILED: not healthy after 600 s" >&2; exit 1; }
answer=$(curl -fsS "http://127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"model":"stories15M","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":8,"temperature":0}')
echo "$answer" | node -e '
  const b = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const c = b.choices[0];
  if (typeof c.message.content !== "string" || c.message.content.length === 0 || b.usage.completion_tokens !== 8) {
    console.error("check-install: FAILED: unexpected answer", JSON.stringify(b));
    process.exit(1);
  }
  console.error("check-install: answered:", JSON.stringify(c.message.content));
'
[ -f "$work/models/stories15M/model.safetensors" ] || { echo "check-install: FAILED: the model was not pulled into $work/models" >&2; exit 1; }
echo "check-install: 1 passed, 0 failed"
